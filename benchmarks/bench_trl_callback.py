"""Overhead of grpokit's DiagnosticsCallback in the tiny offline GRPO setup of the end-to-end test
(2-layer Qwen2, hidden 32, 4 prompts × 4 completions per step, 6 completion tokens, K = 2,
num_iterations = 2, CPU).

    python benchmarks/bench_trl_callback.py [--steps 12] [--repeat 3]

Reports (1) the callback's own time (every callback event, timed inside the run) as a fraction of
the training time, and (2) the median wall time of a training run with and without the callback.
(1) is the robust number on a shared machine; (2) includes run-to-run noise.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

import trl_tiny as tt  # noqa: E402
from grpokit.integrations.trl import DiagnosticsCallback, GRPOTrainer  # noqa: E402


class TimedCallback(DiagnosticsCallback):
    """DiagnosticsCallback that accumulates the time spent in its events."""

    spent = 0.0

    def on_train_begin(self, *a, **k):
        t0 = time.perf_counter()
        super().on_train_begin(*a, **k)
        self.spent += time.perf_counter() - t0

    def on_pre_optimizer_step(self, *a, **k):
        t0 = time.perf_counter()
        super().on_pre_optimizer_step(*a, **k)
        self.spent += time.perf_counter() - t0


def run(steps, with_callback, **cb_options):
    torch.set_num_threads(1)
    cbs = [TimedCallback(warn=False, **cb_options)] if with_callback else []
    trainer = GRPOTrainer(
        model=tt.model(),
        reward_funcs=tt.reward_count_a,
        args=tt.config(Path(tempfile.mkdtemp()), num_iterations=2, max_steps=steps),
        train_dataset=tt.dataset(64),
        processing_class=tt.tokenizer(),
        callbacks=cbs,
        loss="trl.dapo",
    )
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    return total, (cbs[0].spent if cbs else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    run(2, True)  # warm-up (imports, first-call costs)
    with_cb, without, fractions = [], [], []
    for _ in range(a.repeat):
        total, spent = run(a.steps, True)
        with_cb.append(total)
        fractions.append(spent / total)
        without.append(run(a.steps, False)[0])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1")
    print(f"{a.steps} optimizer steps, {a.repeat} repeats (median)")
    print(f"callback self-time / training time: {100 * statistics.median(fractions):.2f}%")
    w, wo = statistics.median(with_cb), statistics.median(without)
    print(f"run with callback {w:.2f} s, without {wo:.2f} s: {100 * (w / wo - 1):+.1f}% (includes noise)")
    print(f"step time without callback: {1000 * wo / a.steps:.0f} ms")
    for opts in (
        {"prefix_every": 1, "momentum_every": 1},
        {"momentum_every": 0},
        {"prefix_every": 0, "momentum_every": 0},
    ):
        fr = [(lambda r: r[1] / r[0])(run(a.steps, True, **opts)) for _ in range(a.repeat)]
        print(f"callback self-time with {opts}: {100 * statistics.median(fr):.2f}%")


if __name__ == "__main__":
    main()
