"""grpokit.integrations.trl: GRPOTrainer with the grpokit loss against TRL 1.16.0's own _compute_loss
(every loss_type, gradient accumulation with steps_per_generation = K), the normalisation modes, the
version guard, DiagnosticsCallback, and an offline end-to-end run on a tiny random model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
gtrl = pytest.importorskip("grpokit.integrations.trl")

import trl  # noqa: E402

import grpokit  # noqa: E402
from test_loss_trl_parity import CASE_OPTIONS, CASES, K, _StubTrainer, batch, inputs_of, run_trl  # noqa: E402
from torch_batches import numpy_policy_loss  # noqa: E402

_DEFAULTS = {name: f.default for name, f in trl.GRPOConfig.__dataclass_fields__.items() if not callable(f.default)}


def grpo_args(loss_type, cfg, steps_per_generation=K):
    a = dict(
        _DEFAULTS,
        loss_type=loss_type,
        max_completion_length=512,
        steps_per_generation=steps_per_generation,
        gradient_accumulation_steps=K,
    )
    for name in CASE_OPTIONS:
        if name in cfg:
            a[name] = cfg[name]
    if "is_mode" in cfg:
        a.update(
            use_vllm=True,
            vllm_importance_sampling_correction=True,
            vllm_importance_sampling_mode=cfg["is_mode"],
            vllm_importance_sampling_clip_max=cfg["is_max"],
            vllm_importance_sampling_clip_min=cfg.get("is_min"),
        )
    return SimpleNamespace(**a)


class _GrpokitStub(_StubTrainer):
    """The same stub, with grpokit's GRPOTrainer loss methods."""

    _compute_loss = gtrl.GRPOTrainer._compute_loss
    _count_options = gtrl.GRPOTrainer._count_options
    _window_tokens = gtrl.GRPOTrainer._window_tokens
    _loss_mask = staticmethod(gtrl.GRPOTrainer._loss_mask)
    _log_metrics = gtrl.GRPOTrainer._log_metrics
    compute_loss = _compute_loss
    callback_handler = SimpleNamespace(callbacks=[])

    def __init__(self, spec, *a, normalization="trl", steps_per_generation=K, **kw):
        super().__init__(*a, **kw)
        self.loss_spec = spec
        self.normalization = normalization
        self.args.steps_per_generation = steps_per_generation
        self.grpokit_window = []
        self._step = 0


def run_grpokit(loss_type, b, cfg, n_items, **kw):
    args = grpo_args(loss_type, cfg, kw.get("steps_per_generation", K))
    spec = gtrl.spec_from_config(args)
    lp = b["lp"].clone().requires_grad_(True)
    stub_cfg = {k: v for k, v in cfg.items() if k not in ("is_mode", "is_min", "is_max")}
    tr = _GrpokitStub(spec, loss_type, lp, b["H"], use_vllm="is_mode" in cfg, **stub_cfg, **kw)
    loss = tr.compute_loss(None, inputs_of(b, n_items, "is_mode" in cfg or "off_policy_mask_threshold" in cfg))
    loss.backward()
    return loss.item(), lp.grad.numpy(), {k: v[-1] for k, v in tr._metrics["train"].items()}


def _trl_cfg(loss_type, cfg):
    if loss_type == "cispo" and "epsilon_high" not in cfg:
        return {**cfg, "epsilon_high": 5.0}
    return cfg


@pytest.mark.parametrize("loss_type,cfg", CASES, ids=lambda x: repr(x))
def test_trainer_loss_equals_trl(loss_type, cfg):
    """Same batch, same config: grpokit's GRPOTrainer loss, gradient and logged metrics equal TRL's."""
    b = batch(seed=len(repr(cfg)) + 31 * len(loss_type))
    cfg = _trl_cfg(loss_type, cfg)
    want_loss, want_grad, want_metrics, n_items = run_trl(loss_type, b, **cfg)
    got_loss, got_grad, got_metrics = run_grpokit(loss_type, b, cfg, n_items)
    tol = 1e-7 if loss_type == "sapo" else 1e-10  # TRL's SAPO temperatures are float32 scalars
    np.testing.assert_allclose(got_loss, want_loss, rtol=tol, atol=1e-12)
    np.testing.assert_allclose(got_grad, want_grad, rtol=100 * tol, atol=1e-12)
    for name, value in want_metrics.items():
        if name in got_metrics:  # logged in float32 by both
            np.testing.assert_allclose(got_metrics[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def test_every_trl_loss_type_is_covered():
    assert {c[0] for c in CASES} == set(gtrl.TRL_LOSS_TYPES)
    for lt in gtrl.TRL_LOSS_TYPES:
        assert f"trl.{lt}" in grpokit.presets()


def test_steps_per_generation_above_accumulation_exact_normaliser():
    """S = 4 generation slices, K = 2 per optimizer step: TRL divides by N_gen·K/S (an estimate of the
    step's tokens); normalization='exact' divides by the step's own token count (slices 2, 3)."""
    S = 4
    slices = [batch(seed=s) for s in range(S)]
    b = slices[2]
    n_gen = float(sum(int(s["mask"].sum()) for s in slices))
    exact = float(b["mask"].sum() + slices[3]["mask"].sum())
    args = grpo_args("dapo", {}, steps_per_generation=S)
    spec = gtrl.spec_from_config(args)
    losses = {}
    for norm in ("trl", "exact"):
        lp = b["lp"].clone().requires_grad_(True)
        tr = _GrpokitStub(spec, "dapo", lp, b["H"], normalization=norm, steps_per_generation=S)
        tr._buffered_inputs = [inputs_of(s, n_gen, False) for s in slices]
        tr._step = 2  # the first micro-batch of the second optimizer step of this generation batch
        losses[norm] = tr.compute_loss(None, inputs_of(b, n_gen, False)).item()
    # TRL's own trainer with S = 4 gives the "trl" value
    lp = b["lp"].clone().requires_grad_(True)
    t = _StubTrainer("dapo", lp, b["H"])
    t.args.steps_per_generation = S
    want = t.compute_loss(None, inputs_of(b, n_gen, False)).item()
    np.testing.assert_allclose(losses["trl"], want, rtol=1e-12)
    np.testing.assert_allclose(losses["exact"] * exact, losses["trl"] * n_gen * K / S, rtol=1e-12)
    audit_trl = gtrl.normalization_audit(args, spec, 1, "trl")
    assert not audit_trl["invariant"] and "steps_per_generation (4)" in audit_trl["reason"]
    assert gtrl.normalization_audit(args, spec, 1, "exact")["invariant"]


def test_exact_normalization_needs_whole_steps():
    b = batch(seed=1)
    spec = gtrl.spec_from_config(grpo_args("dapo", {}, steps_per_generation=3))
    lp = b["lp"].clone().requires_grad_(True)
    tr = _GrpokitStub(spec, "dapo", lp, b["H"], normalization="exact", steps_per_generation=3)
    with pytest.raises(ValueError, match=r"steps_per_generation \(3\) to be a multiple of gradient_accumulation"):
        tr.compute_loss(None, inputs_of(b, 10.0, False))


def test_non_trl_preset_uses_global_counts():
    """paper.dr_grpo (token sum per sequence / number of sequences): the step's sequence count is
    rows × K × processes, so the gradient is that of the whole step's batch."""
    b = batch(seed=5)
    spec = gtrl.spec_from_config(grpo_args("dapo", {}), "paper.dr_grpo")
    assert spec.beta == 0.0 and spec.aggregation == "seq_mean_token_sum"  # beta is the config's
    lp = b["lp"].clone().requires_grad_(True)
    tr = _GrpokitStub(spec, "dapo", lp, b["H"])
    tr.compute_loss(None, inputs_of(b, float(b["mask"].sum()) * K, False)).backward()
    want = numpy_policy_loss(b, "paper.dr_grpo", beta=0.0, num_sequences=b["lp"].shape[0] * K)
    np.testing.assert_allclose(lp.grad.numpy(), want.grad_logp, rtol=1e-13)


def test_audit_rules():
    a = grpo_args("bnpo", {})
    assert not gtrl.normalization_audit(a, gtrl.spec_from_config(a), 1)["invariant"]  # local token mean ÷K
    for lt in ("grpo", "dr_grpo", "dapo", "sapo"):
        a = grpo_args(lt, {})
        assert gtrl.normalization_audit(a, gtrl.spec_from_config(a), 2)["invariant"], lt
    assert not gtrl.clipping_can_be_active(
        SimpleNamespace(num_iterations=1, steps_per_generation=2, gradient_accumulation_steps=2)
    )
    assert gtrl.clipping_can_be_active(
        SimpleNamespace(num_iterations=2, steps_per_generation=2, gradient_accumulation_steps=2)
    )
    assert gtrl.clipping_can_be_active(
        SimpleNamespace(num_iterations=1, steps_per_generation=4, gradient_accumulation_steps=2)
    )


def test_version_guard(monkeypatch):
    monkeypatch.setattr(trl, "__version__", "1.15.2")
    with pytest.raises(ImportError, match=r"supports trl >= 1\.16\.0, < 1\.17\.0, found trl 1\.15\.2"):
        gtrl._check_trl_version()


# ---- DiagnosticsCallback on a hand-made step -------------------------------------------------------


def _fake_trainer(adv, loss=0.0, grad=1.0):
    from collections import defaultdict

    model = torch.nn.Linear(3, 1)
    for p in model.parameters():
        p.grad = torch.full_like(p, grad)
    B, T = adv.shape[0], 4
    w = {
        "logp": torch.zeros(B, T),
        "old_logp": torch.zeros(B, T),
        "advantages": adv,
        "mask": torch.ones(B, T, dtype=torch.long),
        "completion_ids": torch.arange(B * T).reshape(B, T),
        "prompt_ids": torch.zeros(B, 2, dtype=torch.long),
        "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "loss": torch.tensor(loss),
        "step": 0,
    }
    return SimpleNamespace(
        model=model,
        grpokit_window=[w],
        _metrics={"train": defaultdict(list)},
        loss_spec=grpokit.LossSpec(),
        accelerator=SimpleNamespace(num_processes=1),
        num_generations=B,
        normalization="trl",
    )


def _args(**kw):
    a = dict(num_iterations=1, steps_per_generation=2, gradient_accumulation_steps=2, epsilon=0.2, epsilon_high=None)
    a.update(kw)
    return SimpleNamespace(**a)


def test_callback_warns_no_signal_and_non_finite():
    t = _fake_trainer(torch.zeros(4), loss=float("nan"), grad=float("inf"))
    cb = gtrl.DiagnosticsCallback(t, warn=False)
    state = SimpleNamespace(global_step=6)
    cb.on_train_begin(_args(), state, None)
    cb.on_pre_optimizer_step(_args(), state, None, optimizer=torch.optim.AdamW(t.model.parameters()))
    text = "\n".join(cb.messages)
    assert "clipping cannot be active" in text and "ratio is 1" in text
    assert "step 7 carries no learning signal: every group has zero reward variance" in text
    assert "non-finite loss in 1 micro-batch" in text and "non-finite gradients in 2 tensors (first: weight)" in text
    m = t._metrics["train"]
    assert m["grpokit/zero_signal_fraction"] == [1.0] and m["grpokit/non_finite_grad"] == [2.0]
    assert m["grpokit/clipping_can_be_active"] == [0.0] and t.grpokit_window == []


def test_callback_eps_dominance_from_real_optimizer_state():
    t = _fake_trainer(torch.tensor([1.0, -1.0, 0.5, -0.5]), grad=1e-6)
    opt = torch.optim.AdamW(t.model.parameters(), eps=1e-3)
    cb = gtrl.DiagnosticsCallback(t, warn=False)
    state = SimpleNamespace(global_step=0)
    cb.on_train_begin(_args(num_iterations=2), state, None)
    for _ in range(2):
        t.grpokit_window = t.grpokit_window or _fake_trainer(torch.tensor([1.0, -1.0, 0.5, -0.5])).grpokit_window
        cb.on_pre_optimizer_step(_args(num_iterations=2), state, None, optimizer=opt)
        opt.step()
    m = t._metrics["train"]
    assert m["grpokit/eps_dominance"] == [1.0]  # ε = 1e-3 ≫ √v̂ ≈ 1e-6 on every coordinate
    assert any("Adam's ε dominates the update: 100% of coordinates" in s for s in cb.messages)
    assert "grpokit/clip_region/inner_step_0" in m and "grpokit/stale_momentum_share" in m
    assert "grpokit/sigma_in_advantages" not in m  # the config did not say how rewards were scaled


@pytest.mark.parametrize("scale_rewards, flag", [("group", 1.0), ("batch", 1.0), ("none", 0.0)])
def test_callback_reports_whether_sigma_is_in_the_advantages(scale_rewards, flag):
    t = _fake_trainer(torch.tensor([1.0, -1.0, 0.5, -0.5]), grad=1e-3)
    opt = torch.optim.AdamW(t.model.parameters())
    cb = gtrl.DiagnosticsCallback(t, warn=False)
    state = SimpleNamespace(global_step=0)
    args = _args(num_iterations=2, scale_rewards=scale_rewards)
    cb.on_train_begin(args, state, None)
    for _ in range(2):
        t.grpokit_window = t.grpokit_window or _fake_trainer(torch.tensor([1.0, -1.0, 0.5, -0.5])).grpokit_window
        cb.on_pre_optimizer_step(args, state, None, optimizer=opt)
        opt.step()
    assert t._metrics["train"]["grpokit/sigma_in_advantages"] == [flag]


# ---- end to end, offline, tiny random model --------------------------------------------------------


@pytest.mark.parametrize("loss,steps", [("trl.dapo", 4), ("paper.dr_grpo", 2)])
def test_end_to_end_tiny_model(tmp_path, loss, steps):
    import trl_tiny as tt

    model = tt.model()
    before = [p.detach().clone() for p in model.parameters()]
    cb = gtrl.DiagnosticsCallback(warn=False)
    trainer = gtrl.GRPOTrainer(
        model=model,
        reward_funcs=tt.reward_count_a,
        args=tt.config(tmp_path, num_iterations=2, max_steps=steps),
        train_dataset=tt.dataset(),
        processing_class=tt.tokenizer(),
        callbacks=[cb],
        loss=loss,
    )
    assert cb.trainer is trainer
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == steps and all(math.isfinite(h["loss"]) for h in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    keys = set().union(*logs)
    for k in (
        "grpokit/clip_region/inner_step_0",
        "grpokit/clip_region/inner_step_1",
        "grpokit/overshoot",
        "grpokit/stale_momentum_share",
        "grpokit/overshoot_predicted",
        "grpokit/eps_dominance",
        "grpokit/prefix_bias/normalized_mean",
        "grpokit/normalization_invariant",
        "grpokit/zero_signal_fraction",
        "clip_ratio/region_mean",
    ):
        assert k in keys, k
    assert all(h["grpokit/clipping_can_be_active"] == 1.0 for h in logs)
    assert not any("clipping cannot be active" in s for s in cb.messages)


def test_end_to_end_stock_trl_trainer_with_callback(tmp_path):
    """TRL's own GRPOTrainer: the callback still audits the config and reads the optimizer."""
    import trl_tiny as tt

    trainer = trl.GRPOTrainer(
        model=tt.model(),
        reward_funcs=lambda completions, **kw: [1.0] * len(completions),
        args=tt.config(tmp_path, max_steps=2),
        train_dataset=tt.dataset(),
        processing_class=tt.tokenizer(),
    )
    cb = gtrl.DiagnosticsCallback(trainer, warn=False)
    trainer.add_callback(cb)
    trainer.train()
    assert any("clipping cannot be active" in s for s in cb.messages)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all(h["grpokit/clipping_can_be_active"] == 0.0 for h in logs)
    assert all(h["grpokit/normalization_invariant"] == 1.0 for h in logs)  # TRL's default dapo, K = S
    assert "grpokit/eps_dominance" in logs[-1]


@pytest.mark.parametrize("loss_type", ["dapo", "cispo", "vespo", "grpo", "bnpo", "dr_grpo"])
def test_two_processes_normaliser_equals_trl(loss_type):
    """With num_processes = 2 each process's loss (before DDP's average) equals TRL's: the
    token-mean losses divide by N_gen / P (grpokit: dp_size = P), the others are local."""
    b = batch(seed=17)
    cfg = _trl_cfg(loss_type, {})
    n_items = float(b["mask"].sum()) * K * 2  # two processes' generation batches
    lp = b["lp"].clone().requires_grad_(True)
    t = _StubTrainer(loss_type, lp, b["H"], epsilon_high=cfg.get("epsilon_high"))
    t.accelerator.num_processes = 2
    want = t.compute_loss(None, inputs_of(b, n_items, False))
    want.backward()
    want_grad = lp.grad.clone()
    spec = gtrl.spec_from_config(grpo_args(loss_type, cfg))
    lp2 = b["lp"].clone().requires_grad_(True)
    g = _GrpokitStub(spec, loss_type, lp2, b["H"])
    g.accelerator.num_processes = 2
    got = g.compute_loss(None, inputs_of(b, n_items, False))
    got.backward()
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-10)
    np.testing.assert_allclose(lp2.grad.numpy(), want_grad.numpy(), rtol=1e-8, atol=1e-12)
    assert g.grpokit_window == []  # nothing is kept without a DiagnosticsCallback


def test_end_to_end_exact_normaliser_counts_the_step(tmp_path, monkeypatch):
    """Real trainer, steps_per_generation = 4, K = 2: with normalization='exact' every micro-batch of an
    optimizer step divides by the tokens of that step's two micro-batches."""
    import trl_tiny as tt

    seen = []
    real = gtrl.gkt.policy_loss

    def spy(logp, old, adv, mask, **kw):
        seen.append((int(mask.sum()), kw["num_items_in_batch"]))
        return real(logp, old, adv, mask, **kw)

    monkeypatch.setattr(gtrl.gkt, "policy_loss", spy)
    trainer = gtrl.GRPOTrainer(
        model=tt.model(),
        reward_funcs=tt.reward_count_a,
        args=tt.config(tmp_path, steps_per_generation=4, max_steps=2),
        train_dataset=tt.dataset(),
        processing_class=tt.tokenizer(),
        normalization="exact",
    )
    trainer.train()
    assert len(seen) == 4
    for step in (seen[0:2], seen[2:4]):
        tokens = sum(n for n, _ in step)
        assert all(count == tokens for _, count in step), seen


@pytest.mark.parametrize("loss_type", gtrl.TRL_LOSS_TYPES)
def test_all_masked_micro_batch_is_a_zero_loss_like_trl(loss_type):
    """Every completion masked (mask_truncated_completions on a micro-batch of truncated completions): TRL's
    clamped normalisers give loss 0 and gradient 0; the subclass gives the same instead of the engine's
    empty-mask error."""
    b = batch(seed=5)
    b["mask"] = torch.zeros_like(b["mask"])
    cfg = _trl_cfg(loss_type, {"beta": 0.04})
    lp = b["lp"].clone().requires_grad_(True)
    want = _StubTrainer(loss_type, lp, b["H"], **cfg).compute_loss(None, inputs_of(b, 1.0, False))
    got_loss, got_grad, _ = run_grpokit(loss_type, b, cfg, 1.0)
    assert want.item() == got_loss == 0.0
    assert not got_grad.any()
