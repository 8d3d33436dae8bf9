"""Benchmark of grpokit.stationary (CPU engine): how long a stationary policy takes.

Targets from issue 8: K = 1,000 outcomes with up to 4 distinct reward levels and G = 64 in under a
second; G ∈ {2, ∞} for any K in milliseconds. Each row is the median wall time of a full public
`stationary.solve(...)` call (argument checks, building P_G, solving, residuals, stability).

    python benchmarks/bench_stationary.py            # the table for benchmarks/RESULTS.md
    python benchmarks/bench_stationary.py --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import statistics
import time

import numpy as np

import grpokit
from grpokit import stationary as st


def timed(fn, repeats):
    times = []
    out = None
    for _ in range(repeats if repeats > 0 else 1):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def problem(rng, K, levels):
    r = rng.integers(0, levels, size=K).astype(float) if levels else rng.random(K)
    if levels:
        r[:levels] = np.arange(levels)
    p = rng.random(K) + 0.01
    return r, p / p.sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    def add(case, K, levels, G, beta, method, fn):
        sec, res = timed(fn, args.repeats)
        rows.append(
            dict(
                case=case,
                K=K,
                levels=levels or K,
                G="inf" if G == math.inf else G,
                beta=beta,
                method=res.method,
                ms=1e3 * sec,
                iterations=res.iterations,
                residual=res.residual,
                converged=res.converged,
            )
        )

    # 1. K = 1000, few reward levels, G = 64 (exact P_G over C(G+L-2, L-1) compositions).
    for levels in (2, 3, 4):
        r, p = problem(rng, 1000, levels)
        for beta in (0.01, 0.1, 1.0):
            add("K=1000 few levels", 1000, levels, 64, beta, "auto", lambda: st.solve(r, p, beta, 64))
    r, p = problem(rng, 1000, 4)
    add("K=1000, 4 levels, direct KL", 1000, 4, 64, 2.0, "auto", lambda: st.solve(r, p, 2.0, 64, penalty="k3_is"))
    add(
        "K=1000, 4 levels, TRL std",
        1000,
        4,
        64,
        0.04,
        "auto",
        lambda: st.solve(r, p, 0.04, 64, std_ddof=1, std_eps=1e-4),
    )
    add("K=1000, 4 levels, flow", 1000, 4, 64, 1.0, "flow", lambda: st.solve(r, p, 1.0, 64, method="flow"))
    # 2. G in {2, inf}: closed forms for any K (all rewards distinct: K levels).
    for K in (10, 1000, 100_000):
        r, p = problem(rng, K, 0)
        for G in (2, math.inf):
            add("G in {2, inf}, distinct rewards", K, 0, G, 0.1, "auto", lambda: st.solve(r, p, 0.1, G))
    # 3. Newton on many levels (dense Jacobian) for scale.
    r, p = problem(rng, 200, 0)
    add("Newton, 200 distinct rewards", 200, 0, 2, 0.1, "newton", lambda: st.solve(r, p, 0.1, 2, method="newton"))

    print(
        f"grpokit {grpokit.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}, median of {args.repeats}"
    )
    print("| case | K | levels | G | beta | method | ms | iterations | residual |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        flag = "" if x["converged"] else " (NOT converged)"
        print(
            f"| {x['case']} | {x['K']} | {x['levels']} | {x['G']} | {x['beta']:g} | {x['method']} | "
            f"{x['ms']:.2f} | {x['iterations']} | {x['residual']:.1e}{flag} |"
        )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
