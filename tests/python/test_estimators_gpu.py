"""The CUDA estimator kernels (cuda/estimators.cu) against the CPU engine (skipped without a GPU).

The CPU engine is checked against fp64 NumPy references in test_estimators.py; here every estimator
and option that changes the kernels' code path runs on torch CUDA tensors and on the same values on
the CPU. Half-precision rewards are compared with the CPU engine on their float64 values, so the
tolerance bounds the GPU's single rounding of each output.
"""

import numpy as np
import pytest

import grpokit

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

from torch_batches import ragged_mask  # noqa: E402

# Each output is computed in double and rounded once to the rewards' dtype.
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-6, 1e-6),
    torch.bfloat16: (2**-7, 2**-8),
    torch.float16: (2**-9, 2**-10),
}

# (estimator, options, K reward columns, extra inputs)
OUTCOME = [
    ("grpo", {}, 1, ()),
    ("grpo", {"std": "population"}, 1, ()),
    ("trl.grpo", {}, 3, ()),
    ("trl.grpo_batch_std", {}, 3, ()),
    ("grpo", {"baseline": "leave_one_out"}, 1, ()),
    ("rloo", {}, 1, ()),
    ("rloo", {"normalize": True}, 3, ()),
    ("rloo", {"reward_clip_range": (-0.5, 0.8), "beta": 0.1}, 1, ("mask", "logp", "ref_logp")),
    ("reinforce_pp_baseline", {}, 1, ("mask",)),
    ("reinforce_pp_baseline", {}, 3, ("lengths",)),
    ("opo", {}, 1, ("mask",)),
    ("opo", {}, 3, ("lengths",)),
    ("grpo_passk", {}, 1, ()),
    ("grpo_passk", {"std": "none"}, 3, ()),
    ("gpg", {}, 1, ()),
    ("gpg", {"f_norm": 2.5}, 3, ()),
    ("normalize_then_sum", {}, 3, ()),
    ("gdpo", {}, 3, ("mask",)),
    ("skyrl.maxrl", {}, 1, ()),
    ("maxrl", {}, 3, ()),
    ("areal.batch_mean", {}, 1, ()),
    ("areal.batch_mean_group_std", {}, 3, ()),
    ("roll.running", {}, 3, ()),
    ("roll.running_mean", {}, 1, ()),
    ("batch_mean", {"baseline": "leave_one_out", "std": "none"}, 1, ()),
]

TOKEN = [
    ("reinforce_pp", {"return_returns": True}, True, ()),
    ("reinforce_pp", {"gamma": 0.9}, False, ()),
    ("remax", {"return_returns": True}, True, ("baseline_rewards",)),
    ("remax", {}, False, ("baseline_rewards",)),
    ("optimal_token_baseline", {"return_returns": True}, True, ("logp", "sum_pi_squared", "is_weights")),
    ("optimal_token_baseline", {"handle_zero_tail": False}, False, ("logp", "sum_pi_squared")),
    ("tir_optimal_token_baseline", {"return_returns": True}, True, ("logp", "sum_pi_squared", "is_weights")),
    ("tir_optimal_token_baseline", {}, False, ("logp", "sum_pi_squared")),
]

# (B, T, group size or None for uneven group ids)
SHAPES = [(6, 5, 3), (12, 33, 4), (10, 1, 2), (9, 7, None), (130, 17, None), (512, 64, 16)]


def batch(B, T, K, gen):
    """Rewards (exact 0/1 ties and random values, NaN entries with K > 1, row 1 unscorable) and
    every optional input, as float64 CPU tensors."""
    pick = torch.randint(0, 4, (B, K), generator=gen)
    r = torch.where(pick == 0, 0.0, torch.where(pick == 1, 1.0, torch.randn(B, K, generator=gen, dtype=torch.float64)))
    r = r.double()
    if K > 1:
        r[torch.rand(B, K, generator=gen) < 0.2] = float("nan")
    r[1] = float("nan")
    mask = ragged_mask(B, T, gen, empty_row=True, gap=True)
    p = torch.rand(B, T, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    return {
        "rewards": r[:, 0] if K == 1 else r,
        "mask": mask,
        "lengths": torch.where(torch.arange(B) == 2, 0, torch.randint(1, 7, (B,), generator=gen)),
        "logp": p.log(),
        "ref_logp": p.log() + 0.1 * torch.randn(B, T, generator=gen, dtype=torch.float64),
        "sum_pi_squared": p * p + 0.3 * (1 - p) ** 2,
        "is_weights": 0.5 + torch.rand(B, T, generator=gen, dtype=torch.float64),
        "baseline_rewards": torch.randn(B, generator=gen, dtype=torch.float64),
        "token_rewards": torch.where(
            mask & (torch.rand(B, T, generator=gen) < 0.3), torch.randn(B, T, generator=gen, dtype=torch.float64), 0.0
        ),
        "outcome": torch.randn(B, generator=gen, dtype=torch.float64),
    }


def groups(B, G):
    if G is not None:
        return {"group_size": G}
    return {"group_ids": torch.tensor([(i * 7) % 4 + 10 for i in range(B)])}


def run_both(estimator, opts, rewards, inputs, grouping, dtype):
    """(cpu, gpu) results: the GPU on `dtype` rewards, the CPU on their float64 values."""
    r_dev = rewards.to(dtype).cuda()
    r_cpu = r_dev.double().cpu()
    cpu_in = {k: v for k, v in inputs.items()}
    if "reward_weights" not in opts and rewards.ndim == 2 and not estimator.endswith("grpo_batch_std"):
        opts = {**opts, "reward_weights": [1.0, 0.5, -2.0]}
    cpu = grpokit.advantages(r_cpu, estimator=estimator, **grouping, **cpu_in, **opts)
    gpu_in = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in inputs.items()}
    gpu_grouping = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in grouping.items()}
    gpu = grpokit.advantages(r_dev, estimator=estimator, **gpu_grouping, **gpu_in, **opts)
    return cpu, gpu


def assert_close(gpu, cpu, dtype):
    rtol, atol = TOL[dtype]
    assert gpu.is_cuda and gpu.dtype == dtype and gpu.shape == cpu.shape
    g = gpu.double().cpu().numpy()
    c = cpu.double().numpy()
    scale = max(float(np.abs(c).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(g, c, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("estimator, opts, K, extra", OUTCOME, ids=lambda x: str(x))
def test_outcome_estimators_match_cpu(estimator, opts, K, extra, dtype, shape):
    B, T, G = shape
    d = batch(B, T, K, torch.Generator().manual_seed(B * 31 + T + K))
    inputs = {k: d[k] for k in extra}
    cpu, gpu = run_both(estimator, dict(opts), d["rewards"], inputs, groups(B, G), dtype)
    assert_close(gpu, cpu, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("estimator, opts, token_rewards, extra", TOKEN, ids=lambda x: str(x))
def test_token_estimators_match_cpu(estimator, opts, token_rewards, extra, dtype, shape):
    B, T, G = shape
    d = batch(B, T, 1, torch.Generator().manual_seed(B * 17 + T))
    inputs = {"mask": d["mask"], **{k: d[k] for k in extra}}
    rewards = d["token_rewards"] if token_rewards else d["outcome"]
    grouping = groups(B, G) if "optimal_token_baseline" in estimator else {}
    cpu, gpu = run_both(estimator, dict(opts), rewards, inputs, grouping, dtype)
    if opts.get("return_returns"):
        assert_close(gpu[0], cpu[0], dtype)
        assert_close(gpu[1], cpu[1], dtype)
    else:
        assert_close(gpu, cpu, dtype)


def test_inputs_in_other_dtypes_and_layouts():
    """Inputs of mixed dtypes (float32 log-probs, int32 lengths and ids, uint8 mask) and strided
    rewards are read as they are."""
    gen = torch.Generator().manual_seed(5)
    d = batch(12, 9, 3, gen)
    wide = torch.randn(12, 6, dtype=torch.float64, generator=gen)
    wide[:, ::2] = d["rewards"]
    r = wide[:, ::2]  # (12, 3) with strides (6, 2)
    ids = torch.tensor([(i * 7) % 4 for i in range(12)], dtype=torch.int32)
    cpu = grpokit.advantages(
        r.contiguous(), estimator="opo", group_ids=ids, lengths=d["lengths"].int(), reward_weights=[1.0, 0.5, -2.0]
    )
    gpu = grpokit.advantages(
        wide.cuda()[:, ::2],
        estimator="opo",
        group_ids=ids.cuda(),
        lengths=d["lengths"].int().cuda(),
        reward_weights=[1.0, 0.5, -2.0],
    )
    assert_close(gpu, cpu, torch.float64)
    m = d["mask"].to(torch.uint8)
    kw = dict(estimator="optimal_token_baseline", group_size=4)
    cpu = grpokit.advantages(
        d["token_rewards"], mask=m, logp=d["logp"].float(), sum_pi_squared=d["sum_pi_squared"].float(), **kw
    )
    gpu = grpokit.advantages(
        d["token_rewards"].cuda(),
        mask=m.cuda(),
        logp=d["logp"].float().cuda(),
        sum_pi_squared=d["sum_pi_squared"].float().cuda(),
        **kw,
    )
    assert_close(gpu, cpu, torch.float64)


def test_deterministic_and_no_input_writes():
    d = batch(512, 64, 3, torch.Generator().manual_seed(9))
    r = d["rewards"].cuda()
    before = r.clone()
    a = grpokit.advantages(r, group_size=16, estimator="gdpo", mask=d["mask"].cuda())
    b = grpokit.advantages(r, group_size=16, estimator="gdpo", mask=d["mask"].cuda())
    assert torch.equal(a, b)
    assert torch.equal(torch.isnan(r), torch.isnan(before)) and torch.equal(r.nan_to_num(), before.nan_to_num())


def test_side_stream_and_errors():
    d = batch(64, 16, 1, torch.Generator().manual_seed(3))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        r = d["token_rewards"].cuda()
        m = d["mask"].cuda()
        out = grpokit.advantages(r, estimator="reinforce_pp", mask=m)
    s.synchronize()
    cpu = grpokit.advantages(d["token_rewards"], estimator="reinforce_pp", mask=d["mask"])
    assert_close(out, cpu, torch.float64)
    with pytest.raises(ValueError, match="same device"):
        grpokit.advantages(r, estimator="reinforce_pp", mask=d["mask"])
    with pytest.raises(ValueError, match="group_size"):
        grpokit.advantages(d["outcome"].cuda(), estimator="rloo", group_size=5)
    with pytest.raises(ValueError, match="rewards"):
        grpokit.advantages(
            torch.tensor([1.0, float("inf")], device="cuda"), estimator="rloo", group_size=2, check_finite=True
        )


def test_degenerate_inputs_give_the_formulas_values():
    """Inputs the CPU engine rejects after reading values (no host sync on the GPU): documented values."""
    # reinforce_pp over a single selected token: no variance, advantages 0
    m = torch.zeros(2, 3, dtype=torch.bool)
    m[0, 1] = True
    out = grpokit.advantages(torch.ones(2, 3, device="cuda"), estimator="reinforce_pp", mask=m.cuda())
    assert torch.equal(out.cpu(), torch.zeros(2, 3))
    # a group of one completion (uneven ids): RLOO has no baseline, advantage 0
    out = grpokit.advantages(
        torch.tensor([1.0, 2.0, 5.0], device="cuda"), estimator="rloo", group_ids=torch.tensor([0, 0, 1], device="cuda")
    )
    assert out.cpu().tolist() == [-1.0, 1.0, 0.0]


def test_running_state_matches_cpu():
    # the state is merged on the device (the batch kernel) and comes back as three host numbers
    gen = torch.Generator().manual_seed(11)
    cpu_state = grpokit.RunningMoments(20, 0.3, 1.2)
    gpu_state = grpokit.RunningMoments(20, 0.3, 1.2)
    for B in (7, 130, 1):
        r = torch.randn(B, generator=gen, dtype=torch.float64)
        cpu = grpokit.advantages(r, estimator="roll.running", state=cpu_state)
        gpu = grpokit.advantages(r.cuda(), estimator="roll.running", state=gpu_state)
        assert_close(gpu, cpu, torch.float64)
        np.testing.assert_allclose(gpu_state.as_tuple(), cpu_state.as_tuple(), rtol=1e-12)
