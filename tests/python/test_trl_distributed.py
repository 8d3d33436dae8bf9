"""TRL's GRPOTrainer with grpokit under accelerate in two CPU processes (gloo) against one process on the
same global batch (issue 19 §2), and the same under DeepSpeed ZeRO-2 when DeepSpeed is installed:
``trl_distributed_run.py`` is launched once per process count; after three optimizer steps (gradient
accumulation 2, num_iterations 2) the parameters agree, and DiagnosticsCallback's values are the same on
every rank and equal to the one-process run's.

accelerate's ``--cpu`` launcher starts several CPU processes only through MPI; ``--multi_gpu`` hands the
processes to ``torch.distributed.run``, and with no CUDA visible accelerate runs them as MULTI_CPU on gloo."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("accelerate")
pytest.importorskip("grpokit.integrations.trl")

HERE = os.path.dirname(os.path.abspath(__file__))
LOSSES = ("trl.dapo", "trl.grpo")  # a token-mean and a per-sequence preset
# float32 sums in another order (DDP's all-reduce, the split of the batch), amplified by Adam for gradient
# coordinates near 0: ~1e-6 observed; a normalisation off by the number of processes moves them by ~1e-2
PARAM_ATOL = 5e-5
# the diagnostics read float32 log-probabilities and the optimizer's float32 state (after the parameters
# above): ~1e-7 relative, and ~3e-8 absolute for the reward-scale elasticity (values ~4e-4)
DIAG_RTOL, DIAG_ATOL = 1e-5, 1e-7


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out, processes, zero_stage=0):
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=HERE)
    script = [os.path.join(HERE, "trl_distributed_run.py"), str(out), str(processes), ",".join(LOSSES), str(zero_stage)]
    if processes == 1:
        cmd = [sys.executable, *script]
    elif zero_stage:  # DeepSpeed through the Trainer's own GRPOConfig(deepspeed=...), processes from torchrun
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
        cmd += ["--master_port", str(_free_port()), *script]
    else:
        launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no"]
        launch += [
            "--dynamo_backend",
            "no",
            "--num_processes",
            str(processes),
            "--main_process_port",
            str(_free_port()),
        ]
        cmd = [sys.executable, *launch, *script]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("trl_dist")
    _launch(out, 1)
    _launch(out, 2)
    return out, {
        (loss, n, rank): torch.load(out / f"{loss}.{n}.rank{rank}.pt")
        for loss in LOSSES
        for n, rank in ((1, 0), (2, 0), (2, 1))
    }


def _same_training(one, r0, r1):
    import trl_tiny as tt

    assert (one["num_processes"], r0["num_processes"], r1["num_processes"]) == (1, 2, 2)
    moved = max(float((p - s.detach()).abs().max()) for p, s in zip(one["params"], tt.model().parameters()))
    assert moved > 100 * PARAM_ATOL
    for i, (a, b, c) in enumerate(zip(one["params"], r0["params"], r1["params"])):
        assert torch.equal(b, c), f"parameter {i} differs between the ranks"
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=PARAM_ATOL, err_msg=f"parameter {i}")
    np.testing.assert_allclose([h["loss"] for h in r0["logs"]], [h["loss"] for h in one["logs"]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_two_processes_train_like_one(runs, loss):
    _, r = runs
    _same_training(r[loss, 1, 0], r[loss, 2, 0], r[loss, 2, 1])


@pytest.mark.parametrize("loss", LOSSES)
def test_diagnostics_are_world_aggregated(runs, loss):
    _, r = runs
    one, r0, r1 = r[loss, 1, 0], r[loss, 2, 0], r[loss, 2, 1]
    assert len(one["logs"]) == len(r0["logs"]) == len(r1["logs"]) == 3
    keys = 0
    for h1, h0, hr1 in zip(one["logs"], r0["logs"], r1["logs"]):
        diag = sorted(k for k in h1 if k.startswith("grpokit/"))
        assert (
            diag
            == sorted(k for k in h0 if k.startswith("grpokit/"))
            == sorted(k for k in hr1 if k.startswith("grpokit/"))
        )
        for k in diag:
            a, b, c = (float("nan") if x is None else x for x in (h1[k], h0[k], hr1[k]))
            assert b == c or (math.isnan(b) and math.isnan(c)), f"{k}: rank 0 {b}, rank 1 {c}"
            np.testing.assert_allclose(b, a, rtol=DIAG_RTOL, atol=DIAG_ATOL, equal_nan=True, err_msg=k)
        keys += len(diag)
    # the window-based diagnostics ran on the merged window (clip region on both inner steps, prefix bias)
    seen = set().union(*r0["logs"])
    for k in ("grpokit/clip_region/inner_step_1", "grpokit/prefix_bias/shared_normalized", "grpokit/overshoot"):
        assert k in seen, k
    assert any(h["grpokit/clip_region/inner_step_1"] > 0 for h in r0["logs"] if "grpokit/clip_region/inner_step_1" in h)
    assert keys > 30


def test_deepspeed_zero2_two_processes_train_like_one(runs, tmp_path):
    """DeepSpeed ZeRO-2 on the CPU (DeepSpeed's CPU accelerator, gloo): the same parameters as one process.
    DiagnosticsCallback's optimizer diagnostics need a torch Adam with unpartitioned state and gradients,
    which ZeRO shards: only the loss-input diagnostics run there (docs/trl.md)."""
    pytest.importorskip("deepspeed")
    out, r = runs
    _launch(tmp_path, 2, zero_stage=2)
    for loss in LOSSES:
        ds = [torch.load(tmp_path / f"{loss}.2.rank{rank}.pt") for rank in (0, 1)]
        _same_training(r[loss, 1, 0], *ds)
        for h1, h0 in zip(r[loss, 1, 0]["logs"], ds[0]["logs"]):
            for k in ("grpokit/zero_signal_fraction", "grpokit/prefix_bias/shared_normalized"):
                np.testing.assert_allclose(h0[k], h1[k], rtol=DIAG_RTOL, atol=DIAG_ATOL, err_msg=k)
