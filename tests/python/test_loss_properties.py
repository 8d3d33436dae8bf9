"""Properties every preset must have (hypothesis), layouts, threads, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grpokit
from grpokit._presets import resolve

PRESETS = sorted(grpokit.presets())
SELECTION_PRESETS = {n for n in PRESETS if resolve(n, {}).selection != "none"}


def batch(seed, B=5, T=6, spread=0.3, token_adv=False):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    mask = np.arange(T)[None, :] < lengths[:, None]
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    old = lp + rng.normal(0, spread, size=(B, T))
    ref = lp + rng.normal(0, spread, size=(B, T))
    H = rng.uniform(0.1, 2.0, size=(B, T))
    A = rng.normal(size=(B, T) if token_adv else B)
    sel = rng.random((B, T)) < 0.3
    return dict(lp=lp, old=old, ref=ref, H=H, A=A, mask=mask, sel=sel)


def call(name, b, rows=None, minimal=False, **over):
    """minimal: only what the spec needs and no weights output (the engine's vectorised fast path)."""
    rows = slice(None) if rows is None else rows
    weights = over.pop("return_weights", not minimal)
    spec = resolve(name, over)
    kw = {} if minimal else dict(ref_logp=b["ref"][rows], entropies=b["H"][rows])
    kw["return_weights"] = weights
    if minimal and spec.kl != "none" and spec.beta != 0.0:
        kw["ref_logp"] = b["ref"][rows]
    if spec.selection != "none":
        kw["selection"] = b["sel"][rows]
    return grpokit.policy_loss(b["lp"][rows], b["old"][rows], b["A"][rows], b["mask"][rows], spec=spec, **kw, **over)


@settings(max_examples=25)
@given(
    seed=st.integers(0, 10_000),
    name=st.sampled_from(PRESETS),
    fill=st.sampled_from([np.nan, np.inf, 1e30, -7.0]),
    minimal=st.booleans(),
)
def test_padding_content_changes_nothing(seed, name, fill, minimal):
    b = batch(seed)
    base = call(name, b, minimal=minimal)
    dirty = {k: (np.where(b["mask"], v, fill) if k in ("lp", "old", "ref", "H") else v) for k, v in b.items()}
    res = call(name, dirty, minimal=minimal)
    assert float(res.loss) == float(base.loss)
    np.testing.assert_array_equal(res.grad_logp, base.grad_logp)
    if not minimal:
        np.testing.assert_array_equal(res.weights, base.weights)


@settings(max_examples=30)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(PRESETS), dtype=st.sampled_from(["float32", "float64"]))
def test_fast_path_matches_the_general_path(seed, name, dtype):
    """The vectorised row loop (no extras requested) against the general one (weights requested)."""
    b = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in batch(seed).items()}
    fast, full = call(name, b, minimal=True), call(name, b, minimal=True, return_weights=True)
    tol = 1e-12 if dtype == "float64" else 2e-6  # float32: exp_vec is within 2 ulp of expf
    np.testing.assert_allclose(float(fast.loss), float(full.loss), rtol=tol, atol=tol)
    np.testing.assert_allclose(fast.grad_logp, full.grad_logp, rtol=tol, atol=tol)
    for k in full.metrics:
        np.testing.assert_allclose(float(fast.metrics[k]), float(full.metrics[k]), rtol=tol, atol=tol, err_msg=k)


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(PRESETS))
def test_zero_advantages_give_zero_policy_gradient(seed, name):
    b = batch(seed)
    b["A"] = np.zeros_like(b["A"])
    res = call(name, b, beta=0.0, entropy_coef=0.0, dro_beta=0.0)
    spec = resolve(name, {})
    if spec.selection == "kl_cov":  # its penalty is a regulariser, not a policy term
        return
    np.testing.assert_array_equal(res.grad_logp, 0.0)
    assert float(res.loss) == 0.0


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(PRESETS), token_adv=st.booleans())
def test_weights_are_the_policy_gradient_per_unit_advantage(seed, name, token_adv):
    """ω is Prop. 1's coefficient: −∂loss/∂log π = ω·A for the policy term of token-level rules."""
    spec = resolve(name, {})
    if spec.surrogate == "geo_mean" or spec.ratio in ("sequence", "sequence_sum") or spec.gtpo_entropy:
        return  # per-sequence terms mix the advantages of a row's tokens through u_i
    b = batch(seed, token_adv=token_adv)
    res = call(
        name,
        b,
        beta=0.0,
        entropy_coef=0.0,
        dro_beta=0.0,
        positive_example_nll_weight=0.0,
        **({"ppo_kl_coef": 0.0} if spec.selection == "kl_cov" else {}),
    )
    A = b["A"] if token_adv else b["A"][:, None]
    np.testing.assert_allclose(-res.grad_logp, res.weights * A * b["mask"], rtol=1e-12, atol=1e-15)


GLOBAL = {
    "token_mean": lambda b: dict(num_items_in_batch=float(b["mask"].sum())),
    "token_sum": lambda b: {},
    "seq_mean_token_mean": lambda b: dict(num_sequences=float(len(b["A"]))),
    "seq_mean_token_sum": lambda b: dict(num_sequences=float(len(b["A"]))),
    "seq_mean_token_sum_norm": lambda b: dict(num_sequences=float(len(b["A"])), max_completion_length=11.0),
}


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(PRESETS), cut=st.integers(1, 4))
def test_micro_batches_with_global_counts_reproduce_the_full_batch(seed, name, cut):
    spec = resolve(name, {})
    b = batch(seed)
    b["mask"][:, 0] = True  # no empty row: verl's non-empty-row count is then the row count
    over = dict(GLOBAL[spec.aggregation](b), divide_by_ga=False)
    full = call(name, b, **over)
    parts = [call(name, b, rows=slice(0, cut), **over), call(name, b, rows=slice(cut, None), **over)]
    np.testing.assert_allclose(sum(float(p.loss) for p in parts), float(full.loss), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.concatenate([p.grad_logp for p in parts]), full.grad_logp, rtol=1e-12, atol=1e-15)


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), name=st.sampled_from(PRESETS), token_adv=st.booleans())
def test_padded_and_packed_layouts_agree(seed, name, token_adv):
    spec = resolve(name, {})
    b = batch(seed, token_adv=token_adv)
    b["mask"][-1] = False  # an empty row too
    b["mask"][0, 0] = True
    over = {"max_completion_length": 6.0} if spec.aggregation == "seq_mean_token_sum_norm" else {}
    pad = call(name, b, **over)
    m = b["mask"]
    lengths = m.sum(1)
    cu = np.concatenate([[0], np.cumsum(lengths)])
    packed = {k: b[k][m] for k in ("lp", "old", "ref", "H", "sel")}
    A = b["A"][m] if token_adv else b["A"]
    kw = dict(ref_logp=packed["ref"], entropies=packed["H"])
    if spec.selection != "none":
        kw["selection"] = packed["sel"]
    res = grpokit.policy_loss(
        packed["lp"], packed["old"], A, None, spec=spec, cu_seqlens=cu, return_weights=True, **kw, **over
    )
    np.testing.assert_allclose(float(res.loss), float(pad.loss), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(res.grad_logp, pad.grad_logp[m])
    np.testing.assert_array_equal(res.weights, pad.weights[m])


def test_same_bits_for_any_thread_count():
    rng = np.random.default_rng(0)
    B, T = 64, 2049  # > 16k elements per thread for up to 8 threads (smaller calls stay single-threaded)
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T))).astype(np.float32)
    old = (lp + rng.normal(0, 0.2, size=(B, T))).astype(np.float32)
    A = rng.normal(size=B).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(1, T, size=B)[:, None]
    for name in ("trl.dapo", "paper.gspo", "verl.vanilla"):
        runs = [grpokit.policy_loss(lp, old, A, mask, spec=name, num_threads=n) for n in (1, 2, 3, 7)]
        for r in runs[1:]:
            assert r.loss.tobytes() == runs[0].loss.tobytes()
            assert r.grad_logp.tobytes() == runs[0].grad_logp.tobytes()
            assert {k: float(v) for k, v in r.metrics.items()} == {k: float(v) for k, v in runs[0].metrics.items()}


def test_inputs_are_never_modified():
    b = batch(1)
    copies = {k: v.copy() for k, v in b.items()}
    call("trl.grpo", b, beta=0.1, entropy_coef=0.1)
    for k, v in b.items():
        np.testing.assert_array_equal(v, copies[k])


# ---- bad input ---------------------------------------------------------------------------------


def _ok():
    b = batch(2)
    return b["lp"], b["old"], b["A"], b["mask"]


def test_unknown_preset_lists_the_valid_ones():
    lp, old, A, m = _ok()
    with pytest.raises(ValueError, match=r"unknown loss preset 'trl\.foo'; valid presets: .*paper\.gcpo.*trl\.dapo"):
        grpokit.policy_loss(lp, old, A, m, spec="trl.foo")


def test_unknown_option_and_bad_rule_names():
    lp, old, A, m = _ok()
    with pytest.raises(TypeError, match="unknown loss option 'epsilom'"):
        grpokit.policy_loss(lp, old, A, m, epsilom=0.1)
    with pytest.raises(ValueError, match="aggregation: expected one of"):
        grpokit.policy_loss(lp, old, A, m, aggregation="mean")
    with pytest.raises(ValueError, match="loss_agg_mode: expected one of"):
        grpokit.policy_loss(lp, old, A, m, loss_agg_mode="tokenmean")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        grpokit.policy_loss(lp, old, A, m, importance_sampling_level="seq")
    with pytest.raises(TypeError, match="spec: expected a preset name"):
        grpokit.policy_loss(lp, old, A, m, spec=3)


@pytest.mark.parametrize(
    "over,match",
    [
        (dict(epsilon=-0.1), r"epsilon: expected a value >= 0, got -0.1"),
        (dict(epsilon_high=-1.0), r"epsilon_high: expected a value >= 0"),
        (dict(top_entropy_quantile=0.0), r"top_entropy_quantile: expected a value in \(0, 1\]"),
        (dict(clip_ratio_c=0.5), r"clip_ratio_c: the dual-clip bound must be > 1"),
        (dict(sapo_temperature_neg=0.0), r"sapo_temperature_neg: expected a value > 0"),
        (dict(num_items_in_batch=0), r"num_items_in_batch: expected a positive count"),
        (dict(vllm_importance_sampling_clip_min=3.0, vllm_importance_sampling_clip_max=2.0), r"must be less than"),
        (dict(gradient_accumulation_steps=0), r"gradient_accumulation_steps: expected a value > 0"),
    ],
)
def test_invalid_hyper_parameters(over, match):
    lp, old, A, m = _ok()
    with pytest.raises(ValueError, match=match):
        grpokit.policy_loss(lp, old, A, m, spec="trl.grpo", **over)


def test_delta_warns_below_the_clip_bound_but_not_for_cispo():
    lp, old, A, m = _ok()
    with pytest.warns(UserWarning, match=r"delta = 1.1 <= 1 \+ epsilon_high"):
        grpokit.policy_loss(lp, old, A, m, spec="trl.grpo", delta=1.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grpokit.policy_loss(lp, old, A, m, spec="trl.grpo", delta=1.5)
        grpokit.policy_loss(lp, old, A, m, spec="trl.cispo", delta=1.1)  # the cap is not a clip bound


def test_shape_dtype_and_value_errors():
    lp, old, A, m = _ok()
    with pytest.raises(ValueError, match=r"old_logp: expected shape \(5, 6\) \(the shape of logp\), got \(5, 5\)"):
        grpokit.policy_loss(lp, old[:, :5], A, m)
    with pytest.raises(ValueError, match=r"advantages: expected shape \(5,\) or \(5, 6\)"):
        grpokit.policy_loss(lp, old, A[:3], m)
    with pytest.raises(ValueError, match=r"mask: expected shape \(5, 6\)"):
        grpokit.policy_loss(lp, old, A, m[:, :2])
    with pytest.raises(TypeError, match="old_logp: expected dtype float64 \\(the dtype of logp\\), got float32"):
        grpokit.policy_loss(lp, old.astype(np.float32), A, m)
    with pytest.raises(TypeError, match="logp: expected dtype float32 or float64, got int64"):
        grpokit.policy_loss(lp.astype(np.int64), old, A, m)
    with pytest.raises(ValueError, match="logp: expected a padded \\(B, T\\) array"):
        grpokit.policy_loss(lp[0], old[0], A, m[0])
    with pytest.raises(ValueError, match="mask: no valid token"):
        grpokit.policy_loss(lp, old, A, np.zeros_like(m))
    bad = lp.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"logp: non-finite value nan at a valid position \(row 0, token 0\)"):
        grpokit.policy_loss(bad, old, A, m)
    badA = A.copy()
    badA[1] = np.inf
    with pytest.raises(ValueError, match=r"advantages: non-finite value inf at a valid position \(row 1"):
        grpokit.policy_loss(lp, old, badA, m)
    with pytest.raises(ValueError, match="ref_logp: required when beta != 0"):
        grpokit.policy_loss(lp, old, A, m, spec="paper.grpo_r1")
    with pytest.raises(ValueError, match="entropies: required when entropy_coef != 0"):
        grpokit.policy_loss(lp, old, A, m, entropy_coef=0.1)
    with pytest.raises(ValueError, match="selection: required by the clip_cov / kl_cov rules"):
        grpokit.policy_loss(lp, old, A, m, spec="verl.kl_cov")


def test_packed_errors():
    lp = np.log(np.full(7, 0.5))
    with pytest.raises(ValueError, match=r"cu_seqlens: the last offset \(6\) must equal the number of tokens \(7\)"):
        grpokit.policy_loss(lp, None, [1.0, -1.0], cu_seqlens=[0, 3, 6])
    with pytest.raises(ValueError, match="cu_seqlens: offsets must be non-decreasing"):
        grpokit.policy_loss(lp, None, [1.0, -1.0], cu_seqlens=[0, 5, 4])
    with pytest.raises(ValueError, match="max_completion_length: packed inputs have no padded length"):
        grpokit.policy_loss(
            lp, None, [1.0, -1.0], cu_seqlens=[0, 3, 7], spec="verl.vanilla", loss_agg_mode="seq-mean-token-sum-norm"
        )


def test_torch_inputs_come_back_as_torch():
    torch = pytest.importorskip("torch")
    lp, old, A, m = _ok()
    res = grpokit.policy_loss(
        torch.tensor(lp, requires_grad=True),
        torch.tensor(old),
        torch.tensor(A),
        torch.tensor(m),
        spec="trl.dapo",
        return_weights=True,
    )
    assert isinstance(res.grad_logp, torch.Tensor) and res.grad_logp.dtype == torch.float64
    assert isinstance(res.metrics["clip_ratio/region_mean"], torch.Tensor)
    assert res.loss.dim() == 0
