"""Benchmark of the CPU diagnostics engine: shared-prefix bias on real-sized groups, and the Adam
state statistics on a large parameter vector.

    python benchmarks/bench_diagnostics.py [--groups 1] [--group-size 64] [--tokens 8192] [--repeat 5]

Reports the median wall time of `grpokit.diagnostics.prefix_bias_from_weights` (padded (B, T) int64
ids, float32 weights, bool mask) for three sharing patterns: a 32-token prefix shared by the whole
group then random tokens (typical), sub-groups sharing 1,024 tokens, and every completion identical
(worst case: every depth is a shared node). Also `reward_scale` (the Adam-state statistics) on a
50M-coordinate AdamW state, timed against one `torch.optim.AdamW.step` on the same state in the same run
(the GPU acceptance target: ≤ 1× a step on a 1-billion-coordinate state, `--device cuda --adam-only
--adam-coords 1000000000`, run by scripts/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np

from timing import median_time


def make_batch(groups, G, T, pattern, rng):
    B = groups * G
    ids = rng.integers(0, 32000, size=(B, T), dtype=np.int64)
    if pattern == "typical":
        for g in range(groups):
            ids[g * G : (g + 1) * G, :32] = ids[g * G, :32]
    elif pattern == "subgroups":
        for i in range(B):
            ids[i, :1024] = ids[(i // 8) * 8, :1024]
    elif pattern == "identical":
        for g in range(groups):
            ids[g * G : (g + 1) * G] = ids[g * G]
    lengths = rng.integers(T // 2, T + 1, size=B)
    mask = np.arange(T)[None, :] < lengths[:, None]
    omega = (1.0 / lengths[:, None] * mask).astype(np.float32)
    adv = rng.standard_normal(B)
    for g in range(groups):
        adv[g * G : (g + 1) * G] -= adv[g * G : (g + 1) * G].mean()
    return ids, mask, omega, adv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--adam-coords", type=int, default=50_000_000)
    ap.add_argument("--adam-only", action="store_true", help="only the Adam-state statistics")
    ap.add_argument("--device", default="cpu", help="where the AdamW state lives (cpu or cuda)")
    args = ap.parse_args()

    import torch

    import grpokit
    from grpokit import diagnostics as gd

    print(f"grpokit {grpokit.__version__}, torch {torch.__version__}, numpy {np.__version__}")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    rng = np.random.default_rng(0)
    G, T = args.group_size, args.tokens
    for pattern in () if args.adam_only else ("typical", "subgroups", "identical"):
        ids, mask, omega, adv = make_batch(args.groups, G, T, pattern, rng)
        t = median_time(lambda: gd.prefix_bias_from_weights(ids, adv, omega, G, mask=mask), args.repeat)
        n = int(mask.sum())
        print(
            f"prefix_bias  {args.groups} x {G} x {T} ({pattern:9s}): {t * 1e3:8.1f} ms  "
            f"({n / t / 1e6:.1f} M valid tokens/s)"
        )

    if args.adam_coords:
        dev = torch.device(args.device)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        p = torch.nn.Parameter(torch.zeros(args.adam_coords, device=dev))
        opt = torch.optim.AdamW([p], lr=1e-3)
        p.grad = torch.randn_like(p) * 1e-4
        opt.step()
        repeat = max(1, args.repeat // 2)
        # interleaved in one run: the statistics, then one optimizer step on the same state
        t = median_time(lambda: gd.reward_scale(opt), repeat, sync)
        t_step = median_time(opt.step, repeat, sync)
        print(
            f"reward_scale AdamW state ({dev.type}), {args.adam_coords / 1e6:.0f}M coordinates: "
            f"{t * 1e3:8.1f} ms; AdamW.step {t_step * 1e3:8.1f} ms; ratio {t / t_step:.2f}× a step"
        )


if __name__ == "__main__":
    main()
