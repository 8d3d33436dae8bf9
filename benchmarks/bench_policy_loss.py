"""CPU benchmark of grpokit.policy_loss (loss + gradient + metrics) against PyTorch eager written as
TRL writes it, with the machine's streaming memory bandwidth measured in the same run.

    python benchmarks/bench_policy_loss.py [--shapes 64x2048,256x4096] [--threads N] [--append]

Method: float32 inputs, TRL's DAPO loss (token ratio, clip 0.2/0.28, global token mean) and its clip
metrics; PyTorch computes the gradient with autograd (forward + backward), grpokit in one call. Each
timing is the median of --repeat runs after a warm-up. Bandwidth: the best of several NumPy copies of a
256 MiB array (bytes read + written per second). grpokit's traffic is counted as the bytes it must move
in one pass: logp, old_logp (4 B each), mask (1 B) and advantages read, grad_logp (4 B) written.
Extra memory: bytes allocated beyond the inputs (tracemalloc sees NumPy's buffers; the engine's O(B)
row state is added from its size).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

import grpokit


def median_time(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def stream_bandwidth(threads):
    n = 256 * 1024 * 1024 // 8
    a = np.ones(n)
    b = np.empty_like(a)
    best = min(median_time(lambda: np.copyto(b, a), 3) for _ in range(3))
    return 2 * a.nbytes / best  # read + write


def torch_trl_dapo(torch, lp, old, A, mask, n_items, eps_lo=0.2, eps_hi=0.28):
    lp = lp.detach().requires_grad_(True)
    coef_1 = torch.exp(lp - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_lo, 1 + eps_hi)
    adv = A.unsqueeze(1)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    loss = (per_token_loss * mask).sum() / n_items
    loss.backward()
    with torch.no_grad():
        low = (coef_1 < 1 - eps_lo) & (adv < 0)
        high = (coef_1 > 1 + eps_hi) & (adv > 0)
        m = mask.sum()
        metrics = [(low * mask).sum() / m, (high * mask).sum() / m, ((low | high) * mask).sum() / m]
        seq_low = (low * mask).sum(-1) / mask.sum(-1)
        seq_high = (high * mask).sum(-1) / mask.sum(-1)
        metrics += [seq_low.min(), seq_high.max()]
    return loss, lp.grad, metrics


def run(B, T, threads, repeat):
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T))).astype(np.float32)
    old = (lp + rng.normal(0, 0.1, size=(B, T))).astype(np.float32)
    A = rng.normal(size=B).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(T // 2, T + 1, size=B)[:, None]
    n_items = float(mask.sum())

    t_lp, t_old, t_A, t_mask = (torch.from_numpy(x) for x in (lp, old, A, mask.astype(np.float32)))
    t_torch = median_time(lambda: torch_trl_dapo(torch, t_lp, t_old, t_A, t_mask, n_items), repeat)

    def ours():
        return grpokit.policy_loss(lp, old, A, mask, spec="trl.dapo", epsilon_high=0.28,
                                   num_items_in_batch=n_items, num_threads=threads)

    t_ours = median_time(ours, repeat)
    # parity of the two computations at this shape (float32 sums: relative 1e-4)
    r = ours()
    tl, tg, _ = torch_trl_dapo(torch, t_lp, t_old, t_A, t_mask, n_items)
    assert abs(float(r.loss) - tl.item()) <= 1e-4 * max(1.0, abs(tl.item())), (float(r.loss), tl.item())
    np.testing.assert_allclose(r.grad_logp, tg.numpy(), rtol=1e-4, atol=1e-9)

    tracemalloc.start()
    ours()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row_state = B * 2 * 160  # RowStats + RowAcc per row (bytes, upper bound)
    moved = B * T * (4 + 4 + 1 + 4) + B * 4
    return dict(t_torch=t_torch, t_ours=t_ours, moved=moved, peak=peak + row_state,
                grad_bytes=B * T * 4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="64x2048,256x4096")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--append", action="store_true", help="append the results to benchmarks/RESULTS.md")
    args = ap.parse_args()
    import torch

    bw = stream_bandwidth(args.threads)
    lines = [
        f"### policy_loss, CPU — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), threads={args.threads}, "
        f"grpokit {grpokit.__version__}, torch {torch.__version__}, NumPy {np.__version__}. "
        f"Streaming bandwidth (NumPy copy, same run): {bw / 1e9:.1f} GB/s.",
        "",
        "| B×T | PyTorch eager (TRL dapo, fwd+bwd+metrics) ms | grpokit ms | speed-up | grpokit GB/s | "
        "fraction of bandwidth | extra memory (MB) (grad output) |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in args.shapes.split(","):
        B, T = (int(x) for x in shape.split("x"))
        r = run(B, T, args.threads, args.repeat)
        gbs = r["moved"] / r["t_ours"]
        lines.append(
            f"| {B}×{T} | {r['t_torch'] * 1e3:.2f} | {r['t_ours'] * 1e3:.2f} | {r['t_torch'] / r['t_ours']:.1f}× | "
            f"{gbs / 1e9:.1f} | {gbs / bw:.0%} | {r['peak'] / 1e6:.1f} ({r['grad_bytes'] / 1e6:.1f}) |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        path = os.path.join(os.path.dirname(__file__), "RESULTS.md")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
