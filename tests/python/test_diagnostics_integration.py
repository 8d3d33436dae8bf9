"""End to end on a tiny Hugging Face causal LM: a μ-step GRPO inner loop with every diagnostic."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import grpokit  # noqa: E402
from grpokit import diagnostics as gd  # noqa: E402


def test_mu_step_loop_on_a_tiny_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=40, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(cfg)
    G, P, T = 4, 3, 6
    prompt = torch.randint(0, 40, (1, P)).repeat(G, 1)
    completions = torch.randint(0, 40, (G, T))
    completions[:, :2] = completions[0, :2]  # the group shares its first two completion tokens
    lengths = torch.tensor([6, 3, 5, 4])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    input_ids = torch.cat([prompt, completions], dim=1)
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    A = grpokit.advantages(rewards, G, std="population")  # σ in the advantages

    def token_logp(forward):
        logits = forward(input_ids).logits[:, P - 1 : -1]
        return torch.log_softmax(logits.float(), -1).gather(-1, completions[..., None])[..., 0]

    with torch.no_grad():
        old = token_logp(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.01)
    tracker = gd.MomentumTracker(opt, epsilon=0.2, mu=4, named=model)
    alpha = mask.double() / (G * lengths[:, None].double())  # GRPO R1: 1/(G|o_i|), σ already in A
    for _ in range(4):
        ratios = (token_logp(model) - old).exp()
        surrogate = torch.min(ratios * A[:, None], ratios.clamp(0.8, 1.2) * A[:, None])
        loss = -(alpha * surrogate * mask).sum()
        opt.zero_grad()
        loss.backward()
        tracker.step(ratios, A, mask)
        opt.step()
    rep = tracker.report()
    assert len(rep.records) == 4 and rep.records[0].u_prev_norm == 0.0
    assert all(0.0 < r.displacement for r in rep.records)
    assert rep.records[-1].clip is not None and rep.records[-1].clip.n_valid == int(mask.sum())

    # prefix bias of the last inner step's weights: ω = α·s, 0 in ℛ_clip
    ratios = (token_logp(model) - old).exp().detach()
    clipped = gd.clip_region(ratios, A, mask=mask, epsilon=0.2).excess > 0
    omega = np.where(clipped, 0.0, alpha.numpy() * ratios.double().numpy())
    pb = gd.prefix_bias_from_weights(
        completions, A, omega, G, mask=mask, omega_unclipped=alpha.numpy() * ratios.double().numpy()
    )
    assert pb.prefix_len[0] == 2
    A_np = A.numpy()
    for t in range(2):  # the whole-group prefix: W = Σ ω A = G·Cov_pop(ω, A)
        w = omega[:, t]
        np.testing.assert_allclose(pb.coef[0, t], np.sum(w * A_np), atol=1e-12)
        np.testing.assert_allclose(pb.bias[0, t], G * np.mean((w - w.mean()) * (A_np - A_np.mean())), atol=1e-12)

    scale = gd.reward_scale(opt, named=model, sigma_in_alpha=True)
    assert "cancels before the optimizer" in scale.verdict
    la = gd.momentum_lookahead(model, opt, token_logp, old, A, mask=mask, epsilon=0.2)
    assert la.ratio_next.shape == (G, T) and la.n_valid == int(mask.sum())
    dec = gd.loss_decomposition(alpha, A, G, ratios=ratios, mask=mask, epsilon=0.2)
    np.testing.assert_allclose(dec.reward_part, 0.0, atol=1e-12)  # 1/|o_i| weights: Case 1
    report = gd.Combined(rep, pb, scale, la, dec)
    assert "Momentum past the clip region" in str(report) and "Prop. 4" in str(report)
    import matplotlib

    matplotlib.use("Agg")
    assert len(report.plot().axes) == report.n_panels == 8
