"""Runs grpokit.policy_loss for one preset a few times, one thread: a driver to count instructions
(valgrind --tool=callgrind --toggle-collect='*loss_cpu::fast_row*') or cycles (perf stat) per token
of the CPU engine's row loops, without Python's start-up in the figure. Each preset gets the inputs its
rules read, as in bench_policy_loss.py (a selection, entropies; --sampler-is: the sampler's log-probs).
No timing here.

    python benchmarks/loss_driver.py PRESET [BETA] [--shape 64x2048] [--calls 3] [--sampler-is]
"""

from __future__ import annotations

import argparse

import grpokit
from bench_policy_loss import extra_inputs, inputs
from grpokit._presets import resolve


def main():
    p = argparse.ArgumentParser()
    p.add_argument("preset")
    p.add_argument("beta", nargs="?", type=float, default=0.0)
    p.add_argument("--shape", default="64x2048")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--sampler-is", action="store_true")
    a = p.parse_args()
    B, T = (int(x) for x in a.shape.split("x"))
    lp, old, ref, A, mask = inputs(B, T)
    f = dict(resolve(a.preset, {"beta": a.beta}).engine_fields())
    extra = extra_inputs(f, B, T, old, a.sampler_is)
    for _ in range(a.calls):
        r = grpokit.policy_loss(lp, old, A, mask, spec=a.preset, beta=a.beta, ref_logp=ref, num_threads=1, **extra)
    print(a.preset, a.beta, "tokens", int(mask.sum()), "loss", float(r.loss))


if __name__ == "__main__":
    main()
