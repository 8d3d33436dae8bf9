"""grpokit.compare / grpokit.explain / `grpokit compare FILE.npz`, against the independent references
(loss_reference.py, reference.py) and finite differences."""

import dataclasses

import numpy as np
import pytest

import grpokit
from grpokit._compare import FACTORS
from loss_reference import fd_grad, reference_loss
from reference import advantages as ref_advantages

# The advantage conventions docs/compare.md promises, written out independently.
CONVENTION = {
    "trl.grpo": dict(std="sample", epsilon=1e-4),
    "trl.bnpo": dict(std="sample", epsilon=1e-4),
    "trl.dapo": dict(std="sample", epsilon=1e-4),
    "trl.dr_grpo": dict(std="sample", epsilon=1e-4),
    "trl.cispo": dict(std="sample", epsilon=1e-4),
    "paper.dapo": dict(std="population"),
    "paper.grpo_r1": dict(std="population"),
    "paper.dr_grpo": dict(std="none"),
    "paper.gspo": dict(std="population"),
}


def make_batch(seed=0, B=8, T=7, G=4, shared=2):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, T + 1, B)
    mask = np.arange(T)[None, :] < lengths[:, None]
    rewards = rng.integers(0, 2, B).astype(np.float64)
    rewards[0], rewards[1] = 1.0, 0.0  # no constant group 0
    old = np.log(rng.uniform(0.2, 0.9, (B, T)))
    ids = rng.integers(0, 6, (B, T))
    ids[:, :shared] = ids[0, :shared]
    return dict(
        rewards=rewards,
        group_size=G,
        logp=old + rng.normal(0, 0.2, (B, T)),
        old_logp=old,
        ref_logp=old + rng.normal(0, 0.05, (B, T)),
        mask=mask,
        completion_ids=ids,
    )


def reference(batch, name):
    """(loss, ∂loss/∂logp by finite differences) of preset `name` with its documented advantages."""
    s = grpokit._presets.resolve(name, {})
    A = ref_advantages(batch["rewards"], batch["group_size"], **CONVENTION[name])

    def f(x):
        return reference_loss(s, x, batch["old_logp"], A, batch["mask"], ref=batch["ref_logp"], lp_sg=batch["logp"])[0]

    return f(batch["logp"]), fd_grad(f, batch["logp"].copy())


@pytest.mark.parametrize(
    "name", ["trl.grpo", "trl.dapo", "trl.dr_grpo", "paper.dapo", "paper.grpo_r1", "paper.gspo", "trl.cispo"]
)
def test_compare_rows_match_the_reference(name):
    b = make_batch()
    t = grpokit.compare(b, presets=[name])
    (row,) = t.rows
    loss, grad = reference(b, name)
    assert row["preset"] == name
    assert row["loss"] == pytest.approx(loss, rel=1e-9, abs=1e-12)
    assert row["grad_norm"] == pytest.approx(np.linalg.norm(grad), rel=1e-6)
    np.testing.assert_allclose(t.grads[name], grad, atol=1e-7)


def test_compare_per_completion_weights_on_policy():
    # on policy (old = logp) every ratio factor is 1: ω = α, so Σ_t ω_i is the aggregation's weight
    b = make_batch()
    b["old_logp"] = b["logp"]
    t = grpokit.compare(b, presets=["trl.dapo", "trl.grpo", "trl.dr_grpo"])
    L = b["mask"].sum(1).astype(float)
    B = len(L)
    np.testing.assert_allclose(t.weights["trl.dapo"], L / L.sum(), rtol=1e-12)  # 1/Σ|o|
    np.testing.assert_allclose(t.weights["trl.grpo"], np.full(B, 1.0 / B), rtol=1e-12)  # 1/(B|o_i|)
    np.testing.assert_allclose(t.weights["trl.dr_grpo"], L / (B * 512), rtol=1e-12)  # 1/(B·L_max)
    assert [r["preset"] for r in t.rows] == ["trl.dapo", "trl.grpo", "trl.dr_grpo"]
    # on policy nothing is clipped
    assert all(r[k] == 0.0 for r in t.rows for k in ("clip_low", "clip_high", "clip_region"))


def test_compare_prefix_bias_columns():
    # a prefix shared by the whole group cancels under token-mean (uniform ω on policy) but not under
    # 1/|o_i| weighting when lengths differ
    b = make_batch(shared=3)
    b["old_logp"] = b["logp"]
    t = grpokit.compare(b, presets=["trl.dapo", "trl.grpo"])
    bias = {r["preset"]: r["prefix_bias"] for r in t.rows}
    assert bias["trl.dapo"] == pytest.approx(0.0, abs=1e-15)
    assert bias["trl.grpo"] > 1e-6
    corr = {r["preset"]: r["weight_length_corr"] for r in t.rows}
    assert corr["trl.grpo"] < -0.5


def test_compare_default_is_every_preset_and_str():
    b = make_batch()
    del b["ref_logp"]
    t = grpokit.compare(b)
    assert [r["preset"] for r in t.rows] == list(grpokit.presets())
    text = str(t)
    assert "trl.dapo" in text and "grad_norm" in text
    assert any("KL terms are switched off" in n for n in t.notes)


def test_compare_overrides_and_advantages_given():
    b = make_batch()
    adv = np.linspace(-1, 1, 8)
    t = grpokit.compare(dict(b, advantages=adv), presets=["trl.dapo:epsilon_high=0.28", ("trl.grpo", {"beta": 0.1})])
    assert [r["preset"] for r in t.rows] == ["trl.dapo:epsilon_high=0.28", "trl.grpo:beta=0.1"]
    np.testing.assert_array_equal(t.advantages["trl.grpo:beta=0.1"], adv)
    s = grpokit._presets.resolve("trl.dapo", {"epsilon_high": 0.28})
    want = reference_loss(s, b["logp"], b["old_logp"], adv, b["mask"], ref=b["ref_logp"])[0]
    assert t.rows[0]["loss"] == pytest.approx(want, rel=1e-9)


def test_compare_errors():
    b = make_batch()
    with pytest.raises(ValueError, match="unknown loss preset 'nope'"):
        grpokit.compare(b, presets=["nope"])
    with pytest.raises(ValueError, match="missing field 'logp'"):
        grpokit.compare({"rewards": [1.0, 0.0], "group_size": 2})
    with pytest.raises(ValueError, match="need 'group_size'"):
        grpokit.compare({"rewards": [1.0, 0.0], "logp": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="unknown field 'logits'"):
        grpokit.compare(dict(b, logits=1))
    with pytest.raises(ValueError, match="expected key=value"):
        grpokit.compare(b, presets=["trl.dapo:epsilon"])
    with pytest.raises(TypeError, match="unknown loss option 'bogus'"):
        grpokit.compare(b, presets=["trl.dapo:bogus=1"])


# ---- explain --------------------------------------------------------------------------------------


def test_factors_cover_every_spec_field_once():
    fields = [f for fs in FACTORS.values() for f in fs]
    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(grpokit.LossSpec))


def test_explain_single_factor_normaliser():
    b = make_batch()
    e = grpokit.explain(b, "trl.grpo", "trl.bnpo")  # they differ in the aggregation only
    differing = [f.name for f in e.factors if f.differs]
    assert differing == ["normaliser"]
    la, ga = reference(b, "trl.grpo")
    lb, gb = reference(b, "trl.bnpo")
    assert e.loss_a == pytest.approx(la, rel=1e-9) and e.loss_b == pytest.approx(lb, rel=1e-9)
    f = e.factors[0]
    assert f.delta_loss == pytest.approx(lb - la, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(f.delta_grad, gb - ga, atol=1e-7)
    assert e.interaction_loss == pytest.approx(0.0, abs=1e-12)
    assert np.abs(e.interaction_grad).max() < 1e-12


def test_explain_paper_grpo_r1_vs_trl_grpo():
    b = make_batch()
    a, c = "paper.grpo_r1", "trl.grpo"
    e = grpokit.explain(b, a, c)
    by = {f.name: f for f in e.factors}
    assert by["advantages"].differs and by["KL placement"].differs and by["normaliser"].differs
    assert not by["clip rule"].differs
    sa = grpokit._presets.resolve(a, {})
    A_a = ref_advantages(b["rewards"], 4, **CONVENTION[a])
    A_b = ref_advantages(b["rewards"], 4, **CONVENTION[c])
    ref = lambda A, s: reference_loss(s, b["logp"], b["old_logp"], A, b["mask"], ref=b["ref_logp"])[0]  # noqa: E731
    # the advantages alone: spec a with b's advantages
    assert by["advantages"].delta_loss == pytest.approx(ref(A_b, sa) - ref(A_a, sa), rel=1e-9, abs=1e-12)
    # KL placement alone: a with TRL's (beta 0, IS-corrected k3)
    sk = dataclasses.replace(sa, beta=0.0, kl_is_corrected=True)
    assert by["KL placement"].delta_loss == pytest.approx(ref(A_a, sk) - ref(A_a, sa), rel=1e-9, abs=1e-12)
    # the parts add up to the total
    total = sum(f.delta_loss for f in e.factors if f.differs) + e.interaction_loss
    assert total == pytest.approx(e.loss_b - e.loss_a, rel=1e-12, abs=1e-14)
    grad_total = sum(f.delta_grad for f in e.factors if f.delta_grad is not None) + e.interaction_grad
    np.testing.assert_allclose(grad_total, e.grad_b - e.grad_a, atol=1e-13)
    text = str(e)
    assert "advantages" in text and "'population' → 'sample'" in text and "interaction" in text


def test_explain_clip_rule_dapo_vs_cispo():
    b = make_batch()
    e = grpokit.explain(b, "trl.dapo", "trl.cispo")
    by = {f.name: f for f in e.factors}
    assert [n for n, f in by.items() if f.differs] == ["clip rule"]
    lb, gb = reference(b, "trl.cispo")
    la, ga = reference(b, "trl.dapo")
    assert by["clip rule"].delta_loss == pytest.approx(lb - la, rel=1e-9, abs=1e-12)
    assert by["clip rule"].delta_grad_norm == pytest.approx(np.linalg.norm(gb - ga), rel=1e-6)


def test_explain_identical_presets():
    e = grpokit.explain(make_batch(), "trl.dapo", "trl.dapo")
    assert not any(f.differs for f in e.factors)
    assert e.loss_a == e.loss_b and e.interaction_loss == 0.0


# ---- the command line -----------------------------------------------------------------------------


def test_cli_compare_npz(tmp_path, capsys):
    from grpokit.cli import main

    b = make_batch()
    path = tmp_path / "batch.npz"
    np.savez(path, **b)
    assert main(["compare", str(path), "--presets", "trl.grpo", "trl.dapo"]) == 0
    out = capsys.readouterr().out
    assert "trl.grpo" in out and "trl.dapo" in out and "grad_norm" in out
    assert main(["compare", str(path), "--presets", "trl.dapo", "--json"]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["rows"][0]["loss"] == pytest.approx(reference(b, "trl.dapo")[0], rel=1e-9)


def test_cli_compare_errors(tmp_path, capsys):
    from grpokit.cli import main

    path = tmp_path / "bad.npz"
    np.savez(path, rewards=np.zeros(4), group_size=2)
    assert main(["compare", str(path)]) == 1
    assert "missing field 'logp'" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "absent.npz")]) == 1


def test_explain_reports_a_factor_that_cannot_be_switched_alone(monkeypatch):
    # a factor the engine refuses to switch alone (an invalid combination with the rest of a) is
    # reported with the reason; its effect goes to the interaction, which still closes the sum
    b = make_batch()
    b["old_logp"] = b["logp"]
    import grpokit._compare as C

    real = C._run

    def refuse_clip(bt, v, spec=None, adv=None):
        if spec is not None and adv is None and spec.surrogate == "logp" and v.spec.surrogate == "clip":
            raise ValueError("refused for the test")
        return real(bt, v, spec, adv)

    monkeypatch.setattr(C, "_run", refuse_clip)
    e = grpokit.explain(b, "trl.dapo", "trl.cispo")
    (f,) = [f for f in e.factors if f.differs]
    assert f.name == "clip rule" and "refused for the test" in f.error and f.delta_grad is None
    assert e.interaction_loss == pytest.approx(e.loss_b - e.loss_a, abs=1e-15)
    assert "not switchable alone" in str(e)


def test_plots_and_dicts():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = make_batch()
    t = grpokit.compare(b, presets=["trl.grpo", "trl.dapo"])
    fig = t.plot()
    assert len(fig.axes) == 3
    plt.close(fig)
    e = grpokit.explain(b, "paper.grpo_r1", "trl.grpo")
    fig = e.plot()
    assert len(fig.axes) == 2
    plt.close(fig)
    d = e.to_dict()
    assert d["loss_a"] == e.loss_a and "advantages/delta_loss" in d and "clip rule/delta_loss" not in d
    assert set(t.to_dict()["weights"]) == {"trl.grpo", "trl.dapo"}


def test_new_presets_appear_automatically(monkeypatch):
    # a verl.* preset registered later (another branch) is compared by default, with verl's advantages
    import grpokit._presets as P

    fake = P.Preset("verl.vanilla", "verl's vanilla PPO loss (test stand-in)", P.LossSpec(aggregation="token_mean"))
    monkeypatch.setitem(P._PRESETS, "verl.vanilla", fake)
    b = make_batch()
    t = grpokit.compare(b)
    assert "verl.vanilla" in [r["preset"] for r in t.rows]
    np.testing.assert_allclose(
        t.advantages["verl.vanilla"], ref_advantages(b["rewards"], 4, std="sample", epsilon=1e-6), rtol=1e-12
    )
    e = grpokit.explain(b, "trl.dapo", "verl.vanilla:loss_agg_mode=token-mean")
    by = {f.name: f for f in e.factors}
    assert by["advantages"].differs and by["advantages"].b["epsilon"] == 1e-6


def test_compare_advantages_without_group_size_has_no_prefix_columns():
    b = make_batch()
    del b["rewards"], b["group_size"]
    t = grpokit.compare(dict(b, advantages=np.linspace(-1, 1, 8)), presets=["trl.dapo"])
    assert "prefix_bias" not in t.rows[0]
    assert any("no prefix-bias columns" in n for n in t.notes)


def test_cli_explain_npz(tmp_path, capsys):
    from grpokit.cli import main

    b = make_batch()
    path = tmp_path / "batch.npz"
    np.savez(path, **b)
    assert main(["explain", str(path), "trl.grpo", "trl.bnpo"]) == 0
    out = capsys.readouterr().out
    assert "trl.grpo  vs  trl.bnpo" in out and "normaliser" in out
    assert main(["explain", str(path), "trl.grpo", "trl.bnpo", "--json"]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    la, lb = reference(b, "trl.grpo")[0], reference(b, "trl.bnpo")[0]
    assert d["normaliser/delta_loss"] == pytest.approx(lb - la, rel=1e-9, abs=1e-12)
    assert main(["explain", str(path), "trl.grpo", "nope"]) == 1
    assert "unknown loss preset 'nope'" in capsys.readouterr().err


# ---- whole methods: an advantage estimator and a train–inference correction per variant -------------


def _method_batch(seed=3, B=8, T=9, G=4, sampler_noise=0.4):
    rng = np.random.default_rng(seed)
    mask = np.arange(T)[None, :] < rng.integers(3, T + 1, B)[:, None]
    old = np.log(rng.uniform(0.2, 0.9, (B, T)))
    return dict(
        rewards=rng.integers(0, 2, B).astype(float),
        group_size=G,
        logp=old + rng.normal(0, 0.15, (B, T)),
        old_logp=old,
        mask=mask,
        sampling_logp=old + rng.normal(0, sampler_noise, (B, T)),
    )


def test_variant_with_an_estimator_gets_its_advantages():
    b = _method_batch()
    t = grpokit.compare(b, presets=["trl.dapo:estimator=rloo", "verl.vanilla:estimator=verl.opo"])
    want_rloo = grpokit.advantages(b["rewards"], b["group_size"], estimator="rloo")
    want_opo = grpokit.advantages(b["rewards"], b["group_size"], estimator="verl.opo", mask=b["mask"])
    np.testing.assert_allclose(t.advantages["trl.dapo:estimator=rloo"], want_rloo, rtol=1e-12)
    np.testing.assert_allclose(t.advantages["verl.vanilla:estimator=verl.opo"], want_opo, rtol=1e-12)
    r = grpokit.policy_loss(
        b["logp"], b["old_logp"], want_rloo, b["mask"], spec="trl.dapo", sampling_logp=b["sampling_logp"]
    )
    assert t.rows[0]["loss"] == pytest.approx(float(r.loss), rel=1e-12)


@pytest.mark.parametrize("name", ["verl.seq_is_rs", "verl.token_icepop", "trl.token_truncate", "verl.geo_rs"])
def test_variant_with_a_correction_applies_its_weights_and_mask(name):
    b = _method_batch(sampler_noise=1e-4 if name == "verl.geo_rs" else 0.4)  # geo_rs: |mean log r| < 1e-3
    t = grpokit.compare(b, presets=[f"trl.dapo:correction={name}"])
    c = grpokit.correction(name, b["old_logp"], b["sampling_logp"], b["mask"])
    w = None
    if c.weights is not None:
        w = np.asarray(c.weights)
        w = np.ascontiguousarray(np.broadcast_to(w[:, None], b["logp"].shape)) if w.ndim == 1 else w
    # the correction replaces the preset's own sampler IS: no sampling_logp reaches the loss
    want = grpokit.policy_loss(
        b["logp"],
        b["old_logp"],
        t.advantages[f"trl.dapo:correction={name}"],
        np.asarray(c.mask),
        spec="trl.dapo",
        token_weights=w,
    )
    assert t.rows[0]["loss"] == pytest.approx(float(want.loss), rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(t.grads[f"trl.dapo:correction={name}"], want.grad_logp, rtol=1e-12, atol=1e-15)


def test_method_keys_errors():
    b = _method_batch()
    with pytest.raises(ValueError, match="correction: expected one of"):
        grpokit.compare(b, presets=["trl.dapo:correction=bogus"])
    with pytest.raises(ValueError, match="estimator: expected one of"):
        grpokit.compare(b, presets=["trl.dapo:estimator=bogus"])
    with pytest.raises(ValueError, match="rejected every token of the batch"):
        grpokit.compare(b, presets=["trl.dapo:correction=verl.geo_rs"])  # sampler noise 0.4 ≫ geo_rs's 1e-3
    del b["sampling_logp"]
    with pytest.raises(ValueError, match="needs the batch's sampling_logp"):
        grpokit.compare(b, presets=["trl.dapo:correction=verl.seq_is"])


def test_explain_separates_estimator_and_correction():
    b = _method_batch()
    e = grpokit.explain(b, "trl.dapo", "trl.dapo:estimator=rloo,correction=verl.token_icepop")
    by = {f.name: f for f in e.factors}
    assert by["advantages"].differs and by["correction"].differs
    assert not by["clip rule"].differs and not by["normaliser"].differs
    total = sum(f.delta_loss for f in e.factors if f.differs and not f.error) + e.interaction_loss
    assert total == pytest.approx(e.loss_b - e.loss_a, rel=1e-12, abs=1e-15)
    assert "correction: 'none' → 'verl.token_icepop'" in str(e)
