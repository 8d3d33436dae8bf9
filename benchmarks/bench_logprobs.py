"""Benchmark: per-token log-probabilities + entropies from logits (forward, and forward+backward).

Methods
  grpokit      grpokit.token_logprobs (+ token_logprobs_backward for fwd+bwd)
  grpokit_inplace  fwd+bwd with inplace_grad=True (no second (N, V) buffer)
  trl          TRL's selective_log_softmax + entropy_from_logits, PyTorch eager (autograd for bwd)
  compile      the same two functions under torch.compile (--compile)
  liger        Liger's fused_selective_log_softmax (GPU, when liger_kernel is installed)

With --hidden H the input is hidden states (N, H) and an LM-head weight (V, H) instead of logits:
  grpokit      grpokit.torch.linear_token_logprobs (chunked GEMM + online log-sum-exp; autograd)
  trl          logits = hidden @ weight.T, then TRL's two functions (autograd)

Every method runs in a fresh subprocess, so peak memory is that method's own: on the CPU the rise of
the process's peak RSS over its RSS once the inputs exist; on the GPU torch.cuda.max_memory_allocated
minus the inputs. Time is the median of --repeats runs after one warm-up.

  python benchmarks/bench_logprobs.py                         # CPU shapes, float32
  python benchmarks/bench_logprobs.py --shapes 2048x32000 --backward
  python benchmarks/bench_logprobs.py --device cuda --dtype bfloat16 --backward --compile --peak-gbs 3350
  python benchmarks/bench_logprobs.py --hidden 512 --shapes 1024x32000 --backward
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CPU_SHAPES = ["2048x32000", "4096x128256"]
GPU_SHAPES = ["8192x151936", "16384x128256"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_linear_method(name: str, backward: bool):
    import torch

    import grpokit.torch as gkt

    if name == "grpokit":

        def fn(h, w, ids):
            out = gkt.linear_token_logprobs(h, w, ids)
            return out.logp, out.entropy

    elif name == "trl":
        from trl.trainer.utils import entropy_from_logits, selective_log_softmax

        def fn(h, w, ids):
            logits = h @ w.T
            return selective_log_softmax(logits, ids), entropy_from_logits(logits)

    else:
        raise SystemExit(f"{name}: not available with --hidden")

    def run(h, w, ids, g):
        if not backward:
            with torch.no_grad():
                return fn(h, w, ids)[0]
        hh, ww = h.detach().requires_grad_(), w.detach().requires_grad_()
        lp, ent = fn(hh, ww, ids)
        torch.autograd.backward([lp, ent], [g, g])
        return lp

    return run


def make_method(name: str, backward: bool, device: str):
    import torch

    import grpokit

    if name.startswith("grpokit"):
        inplace = name == "grpokit_inplace"

        def run(x, ids, g):
            r = grpokit.token_logprobs(x, ids)
            if backward:
                grpokit.token_logprobs_backward(x, ids, r, g, g, inplace_grad=inplace)
            return r.logp

        return run

    if name in ("trl", "compile"):
        from trl.trainer.utils import entropy_from_logits, selective_log_softmax

        def fn(x, ids):
            return selective_log_softmax(x, ids), entropy_from_logits(x)

        if name == "compile":
            fn = torch.compile(fn)

        def run(x, ids, g):
            if not backward:
                with torch.no_grad():
                    return fn(x, ids)[0]
            xx = x.detach().requires_grad_()
            lp, h = fn(xx, ids)
            torch.autograd.backward([lp, h], [g, g])
            return lp

        return run

    if name == "liger":
        from liger_kernel.ops.grpo_loss import fused_selective_log_softmax  # noqa: F401

        def run(x, ids, g):
            if backward:
                raise SystemExit("liger: fused_selective_log_softmax has no backward")
            return fused_selective_log_softmax(x[None], ids[None])

        return run
    raise SystemExit(f"unknown method {name}")


def worker(args) -> dict:
    import torch

    torch.manual_seed(0)
    n, v = (int(s) for s in args.shape.split("x"))
    dtype = getattr(torch, args.dtype)
    dev = torch.device(args.device)
    ids = torch.randint(0, v, (n,), device=dev)
    g = torch.randn(n, device=dev)
    if args.hidden:
        hid = torch.randn(n, args.hidden, device=dev).to(dtype)
        wgt = (torch.randn(v, args.hidden, device=dev) / args.hidden**0.5 * 3).to(dtype)
        x = torch.empty(0, device=dev, dtype=dtype)
        inner = make_linear_method(args.method, args.backward)

        def run(_x, i, gg):
            return inner(hid, wgt, i, gg)

    else:
        x = torch.empty(n, v, device=dev, dtype=dtype).normal_(0.0, 3.0)  # no temporary (N, V) copy
        run = make_method(args.method, args.backward, args.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    base = rss_bytes()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    run(x.clone() if args.method == "grpokit_inplace" else x, ids, g)  # warm-up (and compile)
    sync()
    times = []
    for _ in range(args.repeats):
        xi = x.clone() if args.method == "grpokit_inplace" else x  # in place destroys the logits
        sync()
        t0 = time.perf_counter()
        run(xi, ids, g)
        sync()
        times.append(time.perf_counter() - t0)
        del xi
    peak = (torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()) - base
    if args.method == "grpokit_inplace":
        peak -= x.numel() * x.element_size()  # the benchmark's own clone of the logits
    t = statistics.median(times)
    passes = 3 if args.backward else 1  # fwd: read logits; bwd: read + write
    nbytes = passes * n * v * x.element_size()
    return {
        "method": args.method,
        "device": args.device,
        "dtype": args.dtype,
        "N": n,
        "V": v,
        "pass": "fwd+bwd" if args.backward else "fwd",
        "time_ms": round(t * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "peak_extra_MiB": round(max(peak, 0) / 2**20, 1),
        "H": args.hidden,
        "logits_MiB": round(n * v * x.element_size() / 2**20, 1),
        # logits traffic is only meaningful when logits are the input
        "GB_per_s": "" if args.hidden else round(nbytes / t / 1e9, 2),
        "frac_of_peak": round(nbytes / t / 1e9 / args.peak_gbs, 3) if args.peak_gbs and not args.hidden else "",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    p.add_argument("--shapes", nargs="*", default=None, help="NxV ...")
    p.add_argument("--methods", nargs="*", default=None)
    p.add_argument("--backward", action="store_true", help="also time forward+backward")
    p.add_argument("--compile", action="store_true", help="include torch.compile")
    p.add_argument("--hidden", type=int, default=0, help="H: time the hidden-state path (N, H) x (V, H)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-gbs", type=float, default=0.0, help="memory bandwidth peak in GB/s (H100 SXM 3350)")
    p.add_argument("--csv", default=None, help="append rows to this CSV file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.dtype is None:
        args.dtype = "float32" if args.device == "cpu" else "bfloat16"
    if args.worker:
        print(json.dumps(worker(args)))
        return

    shapes = args.shapes or (CPU_SHAPES if args.device == "cpu" else GPU_SHAPES)
    methods = args.methods or (
        ["grpokit", "trl"]
        + (["compile"] if args.compile and not args.hidden else [])
        + (["liger"] if args.device == "cuda" and not args.hidden else [])
    )
    passes = [False, True] if args.backward else [False]
    import torch

    import grpokit

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}, grpokit {grpokit.__version__}, {args.dtype}"
    )
    rows = []
    for shape in shapes:
        for backward in passes:
            inplace = backward and "grpokit" in methods and not args.hidden
            for m in methods + (["grpokit_inplace"] if inplace else []):
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    "--method",
                    m,
                    "--shape",
                    shape,
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                    "--repeats",
                    str(args.repeats),
                    "--peak-gbs",
                    str(args.peak_gbs),
                    "--hidden",
                    str(args.hidden),
                ]
                cmd += ["--backward"] if backward else []
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    why = (res.stderr.strip().splitlines() or ["failed"])[-1]
                    print(f"{m:16s} {shape:>13s} {'fwd+bwd' if backward else 'fwd':8s} skipped: {why}")
                    continue
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"{m:16s} {shape:>13s} {row['pass']:8s} {row['time_ms']:10.2f} ms  "
                    f"peak +{row['peak_extra_MiB']:8.1f} MiB (logits {row['logits_MiB']} MiB)  "
                    + (f"{row['GB_per_s']:7.2f} GB/s {row['frac_of_peak']}" if row["GB_per_s"] != "" else "")
                )
    if args.csv and rows:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
