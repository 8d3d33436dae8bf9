"""aggregation='prompt_mean' (SkyRL's prompt-level loss reduction): the token mean inside each prompt group
of ``group_size`` contiguous rows, then the mean over prompts. Against the fp64 reference (value, per-token
terms, finite-difference gradient), its limits (G = 1 and G = B), its global-count form (split-invariant
with ``num_prompts``), the packed layout, torch autograd and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import grpokit
from grpokit._presets import resolve
from test_loss import check, make_batch

PRESETS = ["trl.dapo", "trl.grpo", "verl.vanilla", "paper.gspo", "trl.cispo", "trl.sapo", "paper.grpo_r1"]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("group_size", [2, 3])
def test_matches_the_reference(name, group_size):
    b = make_batch(seed=3, B=6, T=7, empty_row=True)
    check(name, b, overrides=dict(aggregation="prompt_mean", group_size=group_size))


@pytest.mark.parametrize("name", ["trl.dapo", "trl.grpo", "paper.gspo"])
def test_limits_one_row_per_prompt_and_one_prompt(name):
    b = make_batch(seed=5, B=6, T=9)
    args = (b["lp"], b["old"], b["A"], b["mask"])
    # G = 1: every prompt is one completion, so the token mean per row averaged over rows
    one = grpokit.policy_loss(*args, spec=name, aggregation="prompt_mean", group_size=1, beta=0.0)
    seq = grpokit.policy_loss(*args, spec=name, aggregation="seq_mean_token_mean", beta=0.0, divide_by_ga=False)
    np.testing.assert_allclose(float(one.loss), float(seq.loss), rtol=1e-12)
    np.testing.assert_allclose(one.grad_logp, seq.grad_logp, rtol=1e-12, atol=1e-15)
    # G = B: one prompt, so the token mean over the whole call
    whole = grpokit.policy_loss(*args, spec=name, aggregation="prompt_mean", group_size=6, beta=0.0)
    tok = grpokit.policy_loss(*args, spec=name, aggregation="token_mean", beta=0.0, divide_by_ga=False)
    np.testing.assert_allclose(float(whole.loss), float(tok.loss), rtol=1e-12)
    np.testing.assert_allclose(whole.grad_logp, tok.grad_logp, rtol=1e-12, atol=1e-15)


def test_num_generations_is_trls_name_for_group_size():
    spec = resolve("trl.dapo", dict(aggregation="prompt_mean", num_generations=4))
    assert spec.group_size == 4 and spec.aggregation == "prompt_mean"


@pytest.mark.parametrize("name", ["trl.dapo", "paper.gspo"])
def test_split_into_micro_batches_with_the_global_prompt_count(name):
    """Whole prompt groups per call + num_prompts of the step: the sum over calls is the full call."""
    b = make_batch(seed=7, B=8, T=6)
    full = grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec=name, aggregation="prompt_mean", group_size=2)
    parts, grads = 0.0, []
    for rows in (slice(0, 2), slice(2, 8)):  # 1 prompt, then 3
        r = grpokit.policy_loss(
            b["lp"][rows],
            b["old"][rows],
            b["A"][rows],
            b["mask"][rows],
            spec=name,
            aggregation="prompt_mean",
            group_size=2,
            num_prompts=4,
        )
        parts += float(r.loss)
        grads.append(r.grad_logp)
    np.testing.assert_allclose(parts, float(full.loss), rtol=1e-12)
    np.testing.assert_allclose(np.concatenate(grads), full.grad_logp, rtol=1e-12, atol=1e-15)


def test_packed_equals_padded():
    b = make_batch(seed=9, B=6, T=5)
    m = b["mask"]
    cu = np.concatenate([[0], np.cumsum(m.sum(1))]).astype(np.int64)
    kw = dict(spec="trl.grpo", aggregation="prompt_mean", group_size=3, beta=0.0)
    pad = grpokit.policy_loss(b["lp"], b["old"], b["A"], m, **kw)
    packed = grpokit.policy_loss(b["lp"][m], b["old"][m], b["A"], cu_seqlens=cu, **kw)
    np.testing.assert_allclose(float(packed.loss), float(pad.loss), rtol=1e-12)
    np.testing.assert_allclose(packed.grad_logp, pad.grad_logp[m], rtol=1e-12, atol=1e-15)


def test_torch_autograd_equals_the_numpy_path():
    torch = pytest.importorskip("torch")
    gkt = pytest.importorskip("grpokit.torch")
    b = make_batch(seed=11, B=4, T=6)
    kw = dict(spec="trl.dapo", aggregation="prompt_mean", group_size=2)
    want = grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], **kw)
    lp = torch.tensor(np.where(b["mask"], b["lp"], 0.0), requires_grad=True)
    out = gkt.policy_loss(
        lp, torch.tensor(np.where(b["mask"], b["old"], 0.0)), torch.tensor(b["A"]), torch.tensor(b["mask"]), **kw
    )
    out.loss.backward()
    np.testing.assert_allclose(float(out.loss.detach()), float(want.loss), rtol=1e-12)
    np.testing.assert_allclose(lp.grad.numpy(), want.grad_logp, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(aggregation="prompt_mean"), "group_size: required by aggregation='prompt_mean'"),
        (dict(aggregation="prompt_mean", group_size=4), "not a multiple of group_size = 4"),
        (dict(aggregation="prompt_mean", group_size=2.5), "group_size: expected a whole number"),
        (dict(aggregation="prompt_mean", group_size=0), "group_size: expected a positive count"),
        (dict(aggregation="prompt_mean", group_size=2, num_prompts=0), "num_prompts: expected a positive count"),
    ],
)
def test_bad_input(over, match):
    b = make_batch(seed=1, B=6, T=4)
    with pytest.raises(ValueError, match=match):
        grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec="trl.dapo", **over)


def test_compare_takes_the_prompt_groups_from_the_batch():
    b = make_batch(seed=13, B=6, T=5)
    batch = dict(rewards=[1.0, 0.0, 0.5, 1.0, 0.0, 0.0], group_size=3, logp=b["lp"], old_logp=b["old"], mask=b["mask"])
    table = grpokit.compare(batch, presets=["trl.dapo", "trl.dapo:aggregation=prompt_mean"])
    assert [r["preset"] for r in table.rows][1] == "trl.dapo:aggregation=prompt_mean"
    e = grpokit.explain(batch, "trl.dapo", "trl.dapo:aggregation=prompt_mean")
    (norm,) = [f for f in e.factors if f.name == "normaliser"]
    assert norm.b["aggregation"] == "prompt_mean" and norm.b["group_size"] == 3  # taken from the batch
    assert abs(norm.delta_loss - (e.loss_b - e.loss_a)) < 1e-12  # the whole difference is the normaliser
