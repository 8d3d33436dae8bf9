"""The policy-loss benchmark is honest: its PyTorch formulation of every preset (benchmarks/policy_torch.py)
computes grpokit's loss and gradient (float64, tiny shapes), and the preset matrix runs end to end."""

from __future__ import annotations

import csv
import os
import sys
from argparse import Namespace

import numpy as np
import pytest

import grpokit
from grpokit._presets import resolve

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import bench_policy_loss as bench  # noqa: E402
import policy_torch  # noqa: E402

PRESETS = sorted(grpokit.presets())
# rules and options no preset switches on by default (each through the formulation's own function)
RULE_CASES = [
    ("trl.dapo", dict(top_entropy_quantile=0.3, entropy_coef=0.01)),
    ("verl.vanilla", dict(entropy_coef=0.01)),
    ("paper.grpo_v32", dict(off_policy_mask_threshold=0.05)),  # binds differently on smp and old
    ("verl.vanilla", dict(kl_straight_through=True)),
    ("paper.grpo_r1", dict(kl="k1")),
    ("paper.grpo_r1", dict(kl="abs", kl_is_corrected=True)),
    ("trl.dapo", dict(delta=1.1, epsilon_high=0.05)),
    ("paper.dapo", dict(aggregation="prompt_mean", group_size=2)),
    ("verl.vanilla", dict(aggregation="token_sum", dp_size=2.0)),
    ("trl.grpo", dict(gradient_accumulation_steps=4.0, num_sequences=10.0)),
    ("trl.dapo", dict(num_items_in_batch=100.0, log_ratio_min=-0.05, log_ratio_max=0.05)),
    ("areal.decoupled_ppo", dict(is_min=0.98, is_max=1.02)),
    ("trl.grpo", dict(sampler_is="sequence_truncate", is_min=0.9, is_max=1.1)),
]


def _case(name, beta, sampler_is, overrides=None, B=16, T=12, seed=3):
    """grpokit's and the formulation's (loss, gradient) for one preset on float64 inputs."""
    over = {"beta": beta, **(overrides or {})}
    f = resolve(name, over).engine_fields()
    lp, old, ref, A, mask = (v.astype(np.float64) if v.dtype == np.float32 else v for v in bench.inputs(B, T, seed))
    old = lp + 3.0 * (old - lp)  # wider ratios: the clips and trust regions bind on some tokens
    extra = bench.extra_inputs(f, B, T, old, sampler_is, selected=0.3)
    r = grpokit.policy_loss(lp, old, A, mask, spec=name, ref_logp=ref, **extra, **over)
    loss, grad, metrics = policy_torch.policy_loss(f, *bench.torch_args(torch, lp, old, A, mask, ref, extra))
    return r, loss.item(), grad.numpy(), metrics


def _assert_same(r, loss, grad):
    assert abs(float(r.loss) - loss) <= 1e-10 * max(1.0, abs(loss)), (float(r.loss), loss)
    np.testing.assert_allclose(r.grad_logp, grad, rtol=1e-9, atol=1e-12 * max(1.0, float(np.abs(grad).max())))


@pytest.mark.parametrize("sampler_is", [False, True], ids=["plain", "sampler"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_matches_grpokit(name, beta, sampler_is):
    r, loss, grad, metrics = _case(name, beta, sampler_is)
    _assert_same(r, loss, grad)
    assert np.abs(grad).max() > 0  # a gradient that reaches the tokens
    assert all(torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.parametrize("name,overrides", RULE_CASES, ids=[f"{n}-{','.join(o)}" for n, o in RULE_CASES])
def test_rule_options_match_grpokit(name, overrides):
    for sampler_is in (False, True):
        r, loss, grad, _ = _case(name, 0.04, sampler_is, overrides)
        _assert_same(r, loss, grad)


def test_the_masks_bind_in_these_inputs():
    """The inputs exercise the rules' branches (not only their identity path)."""
    _, _, _, m = _case("trl.dapo", 0.0, False)
    assert 0 < float(m["clip_ratio/low_mean"]) + float(m["clip_ratio/high_mean"]) < 1
    for name in ("verl.dppo_tv", "verl.dppo_kl"):
        _, _, _, m = _case(name, 0.0, False)
        assert 0 < float(m["pg_clipfrac"]) < 1, name


def test_matrix_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "rows.csv"
    args = Namespace(
        presets="",
        shapes="4x16",
        quick=False,
        repeat=1,
        threads="all",
        sampler_is=True,
        backends="grpokit,eager",
        out=str(out),
    )
    rows = bench.main_matrix(args)
    threads = bench.thread_counts("all")
    assert len(rows) == len(PRESETS) * 2 * len(threads)
    assert {r["threads"] for r in rows} == set(threads)
    assert all(r["grpokit"] > 0 and r["eager"] > 0 and r["compile"] is None for r in rows)
    assert "n/a" not in capsys.readouterr().out.split("| eager ns/tok")[1].replace("| n/a |\n", "|\n")
    with open(out, encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == len(rows) and lines[0]["compile_ns_per_token"] == ""
    assert {ln["preset"] for ln in lines} == set(PRESETS)


def test_threads_option():
    assert bench.thread_counts("3") == [3]
    assert bench.thread_counts("all")[0] == 1
