"""grpokit presets through verl's actor loss, ``verl.workers.utils.losses.ppo_loss`` (the model engine's loss
function: policy loss + entropy + KL, global batch counts from the data), on CPU; and the normalisation
audit of docs/verl.md: which ``loss_agg_mode`` gives an optimizer step's gradient that does not depend on
the micro-batch split and the data-parallel size. Skipped without verl (pip install 'grpokit[verl]')."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl.workers.utils.losses", exc_type=ImportError)

from tensordict import TensorDict  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import FSDPActorConfig, PolicyLossConfig  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402

import grpokit.integrations.verl  # noqa: E402,F401  (registers the grpokit.* losses)

AGGS = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
P = 2  # prompt tokens per row


def make_batch(seed, B=8, T=6):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    lp = torch.log(torch.rand(B, T, generator=g, dtype=torch.float64) * 0.9 + 0.05)
    return dict(
        lp=lp,
        old=lp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64),
        ref=lp + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64),
        A=torch.randn(B, generator=g, dtype=torch.float64)[:, None].expand(B, T) * mask,
        mask=mask,
        w=torch.rand(B, T, generator=g, dtype=torch.float64) + 0.5,
        H=torch.rand(B, T, generator=g, dtype=torch.float64),
    )


def config(mode, agg):
    return FSDPActorConfig(
        rollout_n=4,
        ppo_micro_batch_size_per_gpu=2,
        loss_agg_mode=agg,
        clip_ratio_high=0.28,
        entropy_coeff=0.01,
        use_kl_loss=True,
        kl_loss_coef=0.05,
        kl_loss_type="low_var_kl",
        policy_loss=PolicyLossConfig(loss_mode=mode),
    )


def flat(x, lengths):
    # the engine's unpadded output: per row, P prompt positions then the response; the output at
    # position j predicts token j + 1, so response token t sits at P - 1 + t (no_padding_2_padding)
    pieces = []
    for row, n in zip(x, lengths.tolist()):
        pieces += [row.new_zeros(P - 1), row[:n], row.new_zeros(1)]
    return torch.cat(pieces)


def step(mode, agg, b, rows, lp, H, counts):
    """verl's ppo_loss on the micro-batch ``rows`` (log-probs and entropies: slices of the leaves)."""
    mask = b["mask"][rows]
    lengths = mask.sum(-1)
    B, T = mask.shape
    data = TensorDict(
        {
            "prompts": torch.ones(B, P, dtype=torch.long),
            "responses": torch.ones(B, T, dtype=torch.long),
            "attention_mask": torch.cat([torch.ones(B, P, dtype=torch.long), mask.long()], dim=1),
            "response_mask": mask.long(),
            "old_log_probs": b["old"][rows],
            "advantages": b["A"][rows],
            "rollout_is_weights": b["w"][rows],
            "ref_log_prob": b["ref"][rows],
        },
        batch_size=[B],
    )
    tu.assign_non_tensor(data, **counts)
    out = {"log_probs": flat(lp[rows], lengths), "entropy": flat(H[rows], lengths)}
    loss, metrics = ppo_loss(config(mode, agg), out, data)
    return loss, metrics


def gradient(mode, agg, b, splits, counts_of):
    """∂/∂(log-probs, entropies) of one optimizer step: every rank's micro-batches accumulated, then
    averaged over ranks as DDP does. ``splits``: per rank, its micro-batches (row index lists)."""
    lp = b["lp"].clone().requires_grad_(True)
    H = b["H"].clone().requires_grad_(True)
    for rank in splits:
        for rows in rank:
            loss, _ = step(mode, agg, b, rows, lp, H, counts_of(rank))
            (loss / len(splits)).backward()
    return torch.cat([lp.grad.flatten(), H.grad.flatten()])


def global_counts(b, dp):
    def counts(rank):
        return dict(dp_size=dp, batch_num_tokens=int(b["mask"].sum()), global_batch_size=len(b["mask"]))

    return counts


def local_counts(b, dp):
    return lambda rank: dict(dp_size=1, batch_num_tokens=None, global_batch_size=None)


SPLITS = {
    "one call": [[list(range(8))]],
    "4 micro-batches": [[[0, 1], [2, 3], [4, 5], [6, 7]]],
    "2 ranks x 2 micro-batches": [[[0, 1], [2, 3]], [[4, 5], [6, 7]]],
    "2 ranks, uneven": [[[0, 1, 2], [3]], [[4], [5, 6, 7]]],
}


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("mode", ["vanilla", "cispo", "gspo", "dppo_tv"])
def test_ppo_loss_with_grpokit_equals_verl(mode, agg):
    b = make_batch(seed=len(mode) + len(agg))
    for split in ("one call", "2 ranks, uneven"):
        want = gradient(mode, agg, b, SPLITS[split], global_counts(b, len(SPLITS[split])))
        got = gradient(f"grpokit.verl.{mode}", agg, b, SPLITS[split], global_counts(b, len(SPLITS[split])))
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    counts = global_counts(b, 1)(None)
    lp, H = b["lp"].clone(), b["H"].clone()
    (want, wm), (got, gm) = (step(m, agg, b, list(range(8)), lp, H, counts) for m in (mode, f"grpokit.verl.{mode}"))
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-10)
    for k in ("actor/pg_loss", "actor/entropy_loss", "kl_loss", "actor/ppo_kl", "actor/pg_clipfrac"):
        np.testing.assert_allclose(value(gm[k]), value(wm[k]), rtol=1e-6, err_msg=k)


def value(metric):
    # verl's Metric keeps the values logged this step
    return [float(v) for v in metric.values] if hasattr(metric, "values") else [float(metric)]


# The audit (docs/verl.md). With verl's global counts (the model engine's ppo_loss always passes them;
# the response width is the whole batch's padded length, as left_right_2_no_padding records it) every
# mode is invariant to the micro-batch split and to the number of ranks. With local counts (dp_size 1,
# no counts) only token-sum is invariant to the micro-batch split, and none to the number of ranks
# (DDP's average divides by it).
INVARIANT = {
    ("global", "micro-batches"): set(AGGS),
    ("global", "ranks"): set(AGGS),
    ("local", "micro-batches"): {"token-sum"},
    ("local", "ranks"): set(),
}


@pytest.mark.parametrize("mode", ["vanilla", "grpokit.verl.vanilla"])
def test_normalisation_audit(mode):
    b = make_batch(seed=3)
    b["mask"][4:, 3:] = False  # the last rows are shorter: token counts differ between micro-batches
    by = {"micro-batches": ["4 micro-batches"], "ranks": ["2 ranks x 2 micro-batches", "2 ranks, uneven"]}
    for counts, name in ((global_counts, "global"), (local_counts, "local")):
        for what, splits in by.items():
            invariant = set()
            for agg in AGGS:
                ref = gradient(mode, agg, b, SPLITS["one call"], counts(b, 1))
                if all(
                    torch.allclose(
                        gradient(mode, agg, b, SPLITS[s], counts(b, len(SPLITS[s]))), ref, rtol=1e-10, atol=1e-13
                    )
                    for s in splits
                ):
                    invariant.add(agg)
            assert invariant == INVARIANT[name, what], (name, what)


@pytest.mark.parametrize(
    "mode,agg",
    [(m, a) for m in ("vanilla", "cispo") for a in AGGS]
    + [(m, "token-mean") for m in ("gspo", "sapo", "dppo_tv", "dppo_kl", "gpg", "geo_mean", "clip_cov")],
)
def test_several_optimizer_steps_through_ppo_loss(mode, agg):
    # a tiny policy (per-token logits as parameters), 3 AdamW steps on one batch in 2 micro-batches: the
    # ratio leaves 1 after the first step, so the clip and the rollout weights act; verl's loss and
    # grpokit's must move the parameters the same way
    b = make_batch(seed=21)
    tokens = torch.randint(0, 5, b["mask"].shape, generator=torch.Generator().manual_seed(0))
    counts = global_counts(b, 1)(None)

    def train(loss_mode):
        torch.manual_seed(0)
        theta = torch.nn.Parameter(torch.randn(*b["mask"].shape, 5, dtype=torch.float64))
        opt = torch.optim.AdamW([theta], lr=0.05)
        old = torch.log_softmax(theta.detach(), -1).gather(-1, tokens[..., None])[..., 0]
        for _ in range(3):
            opt.zero_grad()
            lp = torch.log_softmax(theta, -1).gather(-1, tokens[..., None])[..., 0]
            for rows in ([0, 1, 2, 3], [4, 5, 6, 7]):
                loss, _ = step(loss_mode, agg, {**b, "old": old}, rows, lp, b["H"], counts)
                loss.backward(retain_graph=True)
            opt.step()
        return theta.detach()

    torch.testing.assert_close(train(f"grpokit.verl.{mode}"), train(mode), rtol=1e-9, atol=1e-12)
