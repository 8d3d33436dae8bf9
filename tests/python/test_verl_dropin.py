"""The verl drop-in (issue 19 §3): a tiny random causal LM trained for three optimizer steps through verl's
actor loss entry point (``verl.workers.utils.losses.ppo_loss``: policy loss + entropy bonus + KL, the global
batch counts its engine fills), with verl's built-in ``loss_mode`` and with grpokit's registered
``grpokit.verl.<mode>``: the parameters agree to float64 round-off. Three PPO epochs over one rollout (ratio
≠ 1 from the second), two micro-batches accumulated per step. verl's actor worker itself needs CUDA
(docs/verl.md); this runs its loss function on the CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl.workers.utils.losses", exc_type=ImportError)

import trl_tiny as tt  # noqa: E402
from test_verl_ppo_loss import P, step  # noqa: E402

B, T = 8, 5


def _rollout(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    return dict(
        prompt=torch.randint(2, 10, (B, P), generator=g),
        response=torch.randint(2, 10, (B, T), generator=g),
        mask=torch.arange(T)[None, :] < lengths[:, None],
        A=torch.randn(B, generator=g, dtype=torch.float64)[:, None].expand(B, T).contiguous(),
        w=torch.rand(B, T, generator=g, dtype=torch.float64) + 0.5,
    )


def _logp_entropy(model, r):
    ids = torch.cat([r["prompt"], r["response"]], dim=1)
    logits = model(input_ids=ids).logits[:, P - 1 : -1].double()
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, r["response"][..., None])[..., 0]
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def _train(mode, agg):
    model = tt.model().double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    r = _rollout()
    with torch.no_grad():
        old, _ = _logp_entropy(model, r)
    b = {**r, "old": old, "ref": old.clone()}
    b["A"] = b["A"] * b["mask"]
    counts = dict(dp_size=1, batch_num_tokens=int(b["mask"].sum()), global_batch_size=B)
    for _ in range(3):  # optimizer steps, each an epoch over the rollout (old = the rollout's log-probs)
        opt.zero_grad()
        lp, H = _logp_entropy(model, r)
        for rows in (list(range(B // 2)), list(range(B // 2, B))):  # accumulated micro-batches
            loss, _ = step(mode, agg, b, rows, lp, H, counts)
            loss.backward(retain_graph=True)
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("mode", ["vanilla", "gspo"])  # every mode: test_verl_ppo_loss.py
def test_verl_loss_path_trains_like_verl(mode, agg):
    want = _train(mode, agg)
    got = _train(f"grpokit.verl.{mode}", agg)
    start = list(tt.model().double().parameters())
    assert max(float((w - s.detach()).abs().max()) for w, s in zip(want, start)) > 1e-3  # it trained
    for i, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-9, msg=f"parameter {i}")
