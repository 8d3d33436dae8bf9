"""The normalisation audit (issue 19 §4, docs/losses.md "Split invariance"): is the gradient of one
optimizer step invariant to how its batch is split over processes (P) and accumulated micro-batches (K)?
Measured, not argued: one global batch with ragged lengths, split into P × K equal micro-batches, each
micro-batch's loss differentiated as the peer's trainer does it (TRL's own ``_compute_loss``; verl's
``agg_loss`` with the ``global_batch_info`` its engine fills), the step's gradient = (1/P) Σ_p Σ_k
(DDP's average of the accumulated gradients). A rule is invariant when every split gives the same
gradient as one call on the whole batch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
gtrl = pytest.importorskip("grpokit.integrations.trl")

import grpokit.torch as gkt  # noqa: E402
from test_loss_trl_parity import _StubTrainer, batch  # noqa: E402
from test_trl_integration import _GrpokitStub, _trl_cfg, grpo_args, inputs_of  # noqa: E402

SPLITS = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 4)]  # (processes, accumulation steps)
B = 8
# TRL loss_type -> invariant?  (measured below; docs/losses.md's table states the same)
TRL_INVARIANT = {
    "grpo": True,
    "sapo": True,
    "luspo": True,
    "dr_grpo": True,
    "dapo": True,
    "cispo": True,
    "vespo": True,
    "bnpo": False,
}
VERL_AGGS = ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def _batch():
    b = batch(seed=23, B=B, T=9)
    b["mask"][: B // 2, 2:] = 0  # the first half's completions are short: micro-batches differ in tokens
    b["mask"][:, 0] = 1
    return b


def _chunks(b, parts):
    n = B // parts
    return [{k: v[i * n : (i + 1) * n] for k, v in b.items()} for i in range(parts)]


def _step_grad(loss_of, b, P, K):
    """(1/P) Σ_p Σ_k ∂loss(p, k)/∂logp over the whole batch's rows, in row order."""
    grads = []
    for c in _chunks(b, P * K):
        lp = c["lp"].clone().requires_grad_(True)
        loss_of(c, lp, P, K).backward()
        grads.append(lp.grad / P)
    return torch.cat(grads)


def _trl_loss(loss_type, grpokit=False):
    cfg = _trl_cfg(loss_type, {})

    def loss_of(c, lp, P, K):
        n_gen = float(_batch()["mask"].sum())  # TRL's num_items_in_batch: the generation batch (S = K), all ranks
        if grpokit:
            t = _GrpokitStub(
                gtrl.spec_from_config(grpo_args(loss_type, cfg, K)), loss_type, lp, c["H"], steps_per_generation=K
            )
        else:
            t = _StubTrainer(loss_type, lp, c["H"], epsilon_high=cfg.get("epsilon_high"))
        t.accelerator.num_processes = P
        t.current_gradient_accumulation_steps = t.args.steps_per_generation = K  # TRL's default S = K
        return t.compute_loss(None, inputs_of(c, n_gen, False))

    return loss_of


def _invariant(loss_of):
    b = _batch()
    grads = [_step_grad(loss_of, b, P, K) for P, K in SPLITS]
    return all(torch.allclose(g, grads[0], rtol=1e-10, atol=1e-13) for g in grads[1:])


@pytest.mark.parametrize("loss_type", sorted(TRL_INVARIANT))
def test_trl_loss_types(loss_type):
    """TRL's own loss, and grpokit's trl.* preset in grpokit's trainer: the same verdict (grpokit reproduces TRL)."""
    assert _invariant(_trl_loss(loss_type)) == TRL_INVARIANT[loss_type]
    assert _invariant(_trl_loss(loss_type, grpokit=True)) == TRL_INVARIANT[loss_type]


@pytest.mark.parametrize("preset", ["paper.dapo", "paper.grpo_r1", "paper.dr_grpo", "paper.gspo"])
def test_grpokit_global_counts_are_invariant(preset):
    """grpokit's invariant setting: the step's global token and sequence counts and dp_size = P (what
    gkt.global_counts returns, and what grpokit's trainer passes to non-TRL presets)."""
    full = _batch()
    counts = {"num_items_in_batch": float(full["mask"].sum()), "num_sequences": float(B)}

    def loss_of(c, lp, P, K):
        return gkt.policy_loss(lp, c["old"], c["A"], c["mask"], spec=preset, beta=0.0, dp_size=float(P), **counts).loss

    assert _invariant(loss_of)


@pytest.mark.parametrize("agg", VERL_AGGS)
def test_verl_loss_agg_modes(agg):
    """verl 0.9's engine fills global_batch_info (dp_size, the mini-batch's global tokens and sequences)
    before every micro-batch's loss (verl/workers/engine/*/transformer_impl.py): every loss_agg_mode is
    invariant (verl's agg_loss refuses dp_size > 1 without the counts)."""
    core = pytest.importorskip("verl.trainer.ppo.core_algos", exc_type=ImportError)
    full = _batch()

    def loss_of(c, lp, P, K):
        mat = -c["A"][:, None] * torch.exp(lp - c["old"])
        info = {"dp_size": P, "batch_num_tokens": float(full["mask"].sum()), "global_batch_size": B}
        return core.agg_loss(mat, c["mask"].double(), agg, **info)

    assert _invariant(loss_of)
