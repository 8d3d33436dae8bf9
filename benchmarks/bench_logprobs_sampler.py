"""Benchmark: log-probabilities under the sampler's truncation (top-k / top-p) on the CPU.

Methods (float32 logits, forward; with --backward forward + backward)
  untruncated  grpokit.token_logprobs without truncation (the fused op's baseline)
  grpokit      grpokit.token_logprobs with top_k / top_p (radix selections, no sort)
  eager        the peers' formulation in PyTorch eager: sort each row, mask by top-k and the cumulative
               softmax (vLLM's order), scatter back, log_softmax, gather (autograd for the backward)

Targets (issue 20): grpokit within 2x of untruncated, and >= 5x faster than eager, in the same run.

  python benchmarks/bench_logprobs_sampler.py                       # 2048x32000 and 4096x128256
  python benchmarks/bench_logprobs_sampler.py --shapes 64x1000 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import platform

from timing import median_time


def eager_sampler_logprobs(logits, ids, temperature, k, p):
    """Sort-based truncation as peers write it (independent of grpokit), then log-softmax and gather."""
    import torch

    z = logits / temperature
    srt, idx = z.sort(dim=-1, descending=False)
    kth = srt.gather(-1, (z.shape[-1] - k) * torch.ones_like(ids)[:, None])
    srt = srt.masked_fill(srt < kth, float("-inf"))
    cum = srt.softmax(-1).cumsum(-1)
    drop = cum <= 1 - p
    drop[:, -1] = False
    srt = srt.masked_fill(drop, float("-inf"))
    masked = torch.empty_like(srt).scatter_(-1, idx, srt)
    return masked.log_softmax(-1).gather(-1, ids[:, None])[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="2048x32000,4096x128256")
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backward", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch

    import grpokit
    import grpokit.torch as gkt

    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print("| shape | method | ms | vs untruncated |")
    print("|---|---|---|---|")
    for shape in args.shapes.split(","):
        n, v = (int(s) for s in shape.split("x"))
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, v, generator=gen) * 3
        ids = torch.randint(0, v, (n,), generator=gen)
        t, k, p = args.temperature, args.top_k, args.top_p
        if args.backward:

            def run(**kw):
                xr = x.clone().requires_grad_()
                out = gkt.token_logprobs(xr, ids, temperature=t, **kw)
                torch.where(torch.isfinite(out.logp), out.logp, 0.0).sum().backward()

            def eager():
                xr = x.clone().requires_grad_()
                lp = eager_sampler_logprobs(xr, ids, t, k, p)
                torch.where(torch.isfinite(lp), lp, 0.0).sum().backward()

        else:
            xn, idn = x.numpy(), ids.numpy()

            def run(**kw):
                grpokit.token_logprobs(xn, idn, temperature=t, **kw)

            def eager():
                with torch.no_grad():
                    eager_sampler_logprobs(x, ids, t, k, p)

        base = median_time(lambda: run(), args.repeats)
        rows = [("untruncated", base), ("grpokit", median_time(lambda: run(top_k=k, top_p=p), args.repeats))]
        rows.append(("eager", median_time(eager, args.repeats)))
        for name, s in rows:
            print(f"| {shape} | {name} | {s * 1e3:.1f} | {s / base:.2f}x |")
        # the two truncated results agree (tokens off the boundary)
        with torch.no_grad():
            ref = eager_sampler_logprobs(x, ids, t, k, p).numpy()
        got = np.asarray(grpokit.token_logprobs(x.numpy(), ids.numpy(), temperature=t, top_k=k, top_p=p).logp)
        both = np.isfinite(ref) & np.isfinite(got)
        assert np.allclose(got[both], ref[both], atol=1e-4), "grpokit and the eager formulation disagree"


if __name__ == "__main__":
    main()
