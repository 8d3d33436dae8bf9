"""GRPOTrainer(logprobs="grpokit"): grpokit's fused hidden × weight op in place of TRL's fused LM head,
against TRL's own head on the same tiny random model (values, entropies and parameter gradients), the
cases it leaves to TRL, and an offline training run."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
gtrl = pytest.importorskip("grpokit.integrations.trl")

from trl.trainer.utils import add_fused_lm_head  # noqa: E402

import trl_tiny as tt  # noqa: E402


def _batch(seed=0, B=3, T=9, P=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, len(tt.WORDS) + 2, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[1, :2] = 0  # left padding, as GRPOTrainer's prompts
    labels = ids.masked_fill(attn == 0, -100)
    labels[:, :P] = -100  # only the completion is scored
    labels[2, P:] = -100  # a row with no completion token
    return ids, attn, labels


def _patched(temperature, grpokit_head):
    m = tt.model(seed=3)
    add_fused_lm_head(m, temperature=temperature, outputs=("log_probs", "entropy"))
    if grpokit_head:
        assert gtrl.add_grpokit_lm_head(m, temperature)
    return m


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of grpokit's fused op made through the integration."""
    n = []
    real = gtrl.gkt.linear_token_logprobs
    monkeypatch.setattr(gtrl.gkt, "linear_token_logprobs", lambda *a, **k: n.append(1) or real(*a, **k))
    return n


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_grpokit_head_matches_trls_head(temperature, calls):
    ids, attn, labels = _batch()
    ref, ours = _patched(temperature, False), _patched(temperature, True)
    outs = []
    for m in (ref, ours):
        o = m(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
        (o.log_probs.sum() + 0.3 * o.entropy.sum()).backward()
        outs.append(o)
    a, b = outs
    assert len(calls) == 1
    torch.testing.assert_close(b.log_probs, a.log_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.entropy, a.entropy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(b.label_mask, a.label_mask)
    assert torch.all(b.log_probs[~b.label_mask] == 0)
    for (name, p), q in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_calls_without_the_fused_head_are_trls():
    ids, attn, _ = _batch()
    ref, ours = _patched(1.0, False), _patched(1.0, True)
    torch.testing.assert_close(
        ours(input_ids=ids, attention_mask=attn).logits, ref(input_ids=ids, attention_mask=attn).logits
    )


def test_heads_it_does_not_cover_are_left_to_trl():
    m = tt.model()
    m.config.final_logit_softcapping = 30.0
    add_fused_lm_head(m)
    before = m.forward
    assert gtrl.add_grpokit_lm_head(m) is False
    assert m.forward == before


def test_trainer_option(tmp_path):
    with pytest.raises(ValueError, match="logprobs: expected 'trl' or 'grpokit'"):
        gtrl.GRPOTrainer(
            model=tt.model(),
            reward_funcs=tt.reward_count_a,
            args=tt.config(tmp_path),
            train_dataset=tt.dataset(),
            processing_class=tt.tokenizer(),
            logprobs="liger",
        )


def test_trainer_per_token_logps_equal_trls_and_training_runs(tmp_path, calls):
    kw = dict(
        reward_funcs=tt.reward_count_a,
        args=tt.config(tmp_path, max_steps=2, temperature=0.9),
        train_dataset=tt.dataset(),
        processing_class=tt.tokenizer(),
    )
    model = tt.model(seed=1)
    ours = gtrl.GRPOTrainer(model=model, logprobs="grpokit", **kw)
    theirs = gtrl.GRPOTrainer(model=copy.deepcopy(tt.model(seed=1)), **kw)
    assert ours.grpokit_logprobs and not theirs.grpokit_logprobs
    ids, attn, _ = _batch(seed=5, T=10)
    got = ours._get_per_token_logps_and_entropies(ours.model, ids, attn, 6, compute_entropy=True)
    want = theirs._get_per_token_logps_and_entropies(theirs.model, ids, attn, 6, compute_entropy=True)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
    assert len(calls) == 1  # ours only
    before = [p.detach().clone() for p in model.parameters()]
    ours.train()
    logs = [h for h in ours.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert len(calls) > 1


def test_truncation_passes_the_sampler_settings_and_masks_outside(tmp_path):
    kw = dict(
        reward_funcs=tt.reward_count_a,
        args=tt.config(tmp_path, max_steps=2, temperature=0.8, top_k=4, top_p=0.9),
        train_dataset=tt.dataset(),
        processing_class=tt.tokenizer(),
    )
    with pytest.raises(ValueError, match="truncation=True: needs logprobs='grpokit'"):
        gtrl.GRPOTrainer(model=tt.model(seed=2), truncation=True, **kw)
    model = tt.model(seed=2)
    ours = gtrl.GRPOTrainer(model=model, logprobs="grpokit", truncation=True, **kw)
    ids, attn, _ = _batch(seed=6, T=10)
    got = ours._get_per_token_logps_and_entropies(ours.model, ids, attn, 6, compute_entropy=True)[0]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits[:, -7:-1]
    want = gtrl.gkt.token_logprobs(logits, ids[:, -6:], temperature=0.8, top_k=4, top_p=0.9).logp
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)) and bool(torch.isneginf(want).any())
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=1e-5, atol=1e-5)
    # outside the kept set: out of the loss mask, a finite 0 in its place, counted
    mask = torch.ones_like(got, dtype=torch.long)
    mask[0] = 0
    old = got.detach().clone()
    old[1, 0] = -float("inf")
    lp, o, m = ours._mask_outside(got, old, mask)
    outside = torch.isneginf(got) | torch.isneginf(old)
    assert torch.equal(m.bool(), mask.bool() & ~outside) and torch.isfinite(lp).all() and torch.isfinite(o).all()
    assert ours._metrics["train"]["outside_kept_set"][-1] == float((outside & mask.bool()).sum())
    ours.train()
    logs = [h for h in ours.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) and "outside_kept_set" in h for h in logs)
