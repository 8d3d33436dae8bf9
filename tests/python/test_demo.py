"""`grpokit demo` with a tiny budget: the table, the PNG files, the --help text, the variant syntax."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from grpokit import demo  # noqa: E402
from grpokit._variants import default_advantage_options, make, parse  # noqa: E402
from grpokit.cli import main  # noqa: E402

TINY = ["--steps", "3", "--mu", "2", "-G", "4", "--prompts", "2", "--max-len", "5", "--no-progress"]


def tiny(**over):
    """demo.run_demo's keywords for a tiny budget (no progress, no plots), `over` on top."""
    return {"group_size": 4, "prompts_per_step": 2, "max_len": 4, "progress": False, "plots": False, **over}


def tiny_run(eps_dominance, length_weight_corr):
    """A two-step VariantRun whose length grows by 2."""
    return demo.VariantRun(
        "x",
        reward=[0.0, 1.0],
        length=[2.0, 4.0],
        clip_fraction=[[0.0, 0.5]] * 2,
        overshoot=[0.1, 0.3],
        eps_dominance=eps_dominance,
        momentum_ratio=[1.0, 1.0],
        length_weight_corr=length_weight_corr,
    )


def test_cli_demo_tiny_budget(tmp_path, capsys):
    out = tmp_path / "plots"
    rc = main(["demo", *TINY, "--variants", "trl.grpo", "paper.gspo", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:2] == ["variant", "reward"]
    for col in ("length", "Δlength", "overshoot", "ε-dom"):
        assert col in header
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[2:4]}
    assert set(rows) == {"trl.grpo", "paper.gspo"}
    for values in rows.values():
        reward = float(values[0])
        assert 0.0 <= reward <= 1.0
        assert 1.0 <= float(values[1]) <= 5.0  # mean length within [1, max_len]
    for name in demo.FIGURES:
        path = out / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 1000
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert str(out) in text


def test_cli_demo_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for knob in ("--variants", "-G", "--mu", "--steps", "--seed", "--out", "--adam-eps", "--lr"):
        assert knob in text
    for name in demo.DEFAULT_VARIANTS:
        assert name in text


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "demo" in text and "compare" in text


def test_run_demo_history_and_determinism(tmp_path):
    kw = tiny(variants=["trl.dapo"], steps=3, inner_steps=3, max_len=5, out_dir=str(tmp_path))
    (run,), paths = demo.run_demo(**kw)
    assert paths == [] and not os.listdir(tmp_path)
    assert len(run.reward) == len(run.length) == len(run.overshoot) == len(run.eps_dominance) == 3
    assert all(len(c) == 3 for c in run.clip_fraction)
    # the first inner step sees ratio 1: nothing is in the clip region
    assert all(c[0] == 0.0 for c in run.clip_fraction)
    (again,), _ = demo.run_demo(**kw)
    assert again.reward == run.reward and again.length == run.length
    s = run.summary()
    assert set(c[0] for c in demo.COLUMNS) <= set(s)
    assert np.isnan(s["eps_dominance"]) or 0.0 <= s["eps_dominance"] <= 1.0


def test_variant_runs_use_the_engine_gradient(monkeypatch):
    # the parameter gradients are grad_logp backpropagated: a zeroed grad_logp gives zero gradients
    import grpokit._loss as L

    real = L.policy_loss
    seen = []

    def spy(*a, **k):
        r = real(*a, **k)
        seen.append(k["spec"])
        return r.__class__(loss=r.loss, grad_logp=r.grad_logp * 0.0, weights=r.weights, metrics=r.metrics)

    monkeypatch.setattr(L, "policy_loss", spy)
    cfg = demo.DemoConfig(**tiny(variants=["trl.grpo"], steps=2, inner_steps=1))
    (run,), _ = demo.run_demo(cfg)
    assert len(seen) == 2
    # zero engine gradients: Adam never moves, so its step has no elasticity (0/0) and the ratios
    # stay at 1 (no excess past the bound)
    assert all(np.isnan(x) for x in run.eps_dominance) and run.overshoot == [0.0, 0.0]
    monkeypatch.setattr(L, "policy_loss", real)
    (run,), _ = demo.run_demo(cfg)
    assert any(0.0 <= x < 1.0 for x in run.eps_dominance)


def test_variant_syntax():
    assert parse("trl.grpo") == ("trl.grpo", "trl.grpo", {})
    assert parse("trl.dapo:epsilon_high=0.28,beta=0") == (
        "trl.dapo:epsilon_high=0.28,beta=0",
        "trl.dapo",
        {"epsilon_high": 0.28, "beta": 0},
    )
    label, preset, ov = parse("gspo=trl.grpo:importance_sampling_level=sequence")
    assert (label, preset, ov) == ("gspo", "trl.grpo", {"importance_sampling_level": "sequence"})
    v = make("gspo=trl.grpo:importance_sampling_level=sequence,scale_rewards=none")
    assert v.spec.ratio == "sequence" and v.advantage_options["std"] == "none"
    assert make("trl.dr_grpo", max_completion_length=12).spec.max_completion_length == 12
    assert make("paper.dapo", max_completion_length=12).spec.max_completion_length is None
    assert default_advantage_options("verl.anything")["epsilon"] == 1e-6
    assert default_advantage_options("paper.dr_grpo")["std"] == "none"
    with pytest.raises(ValueError, match="unknown loss preset"):
        make("trl.nope")
    with pytest.raises(ValueError, match="scale_rewards"):
        make("trl.grpo:scale_rewards=sometimes")


def test_demo_config_errors():
    with pytest.raises(ValueError, match="group_size"):
        demo.run_demo(**tiny(group_size=1))
    with pytest.raises(ValueError, match="steps"):
        demo.run_demo(**tiny(steps=0))
    with pytest.raises(ValueError, match="unknown loss preset 'bogus'"):
        demo.run_demo(**tiny(variants=["bogus"]))


def test_format_table_legend():
    run = tiny_run(eps_dominance=[0.0, 0.0], length_weight_corr=[np.nan, -1.0])
    s = run.summary()
    assert s["length_drift"] == pytest.approx(2.0) and s["clip_fraction"] == pytest.approx(0.5)
    assert s["overshoot"] == pytest.approx(0.2) and s["weight_length_corr"] == -1.0
    text = demo.format_table([run])
    assert "length drift" in text and "ε-dom" in text


def test_every_preset_trains():
    # whatever grpokit.presets() holds (verl.* included once merged) is a valid demo variant
    import grpokit

    for name in grpokit.presets():
        (run,), _ = demo.run_demo(**tiny(variants=[name], steps=1, inner_steps=2))
        assert run.variant == name and len(run.clip_fraction[0]) == 2
        assert np.isfinite(run.reward[0]) and np.isfinite(run.overshoot[0])


def test_parse_seeds():
    assert demo.parse_seeds("3") == [0, 1, 2]
    assert demo.parse_seeds("2", first=5) == [5, 6]
    assert demo.parse_seeds("0,3,7", first=5) == [0, 3, 7]
    for bad in ("0", "x", "1,x", "1,1", ""):
        with pytest.raises(ValueError, match="seeds"):
            demo.parse_seeds(bad)


def test_cli_demo_seeds_spread(tmp_path, capsys):
    out = tmp_path / "plots"
    rc = main(["demo", *TINY, "--variants", "trl.grpo", "trl.dr_grpo", "--seeds", "0,1,2", "--out", str(out)])
    assert rc == 0 and not out.exists()  # no plots over seeds
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mean ± std over 3 seeds (0, 1, 2)"
    # each cell is the mean ± sample std of the single-seed runs' summaries
    kw = tiny(variants=["trl.grpo", "trl.dr_grpo"], steps=3, inner_steps=2, max_len=5)
    single = [demo.run_demo(seed=s, **kw)[0] for s in (0, 1, 2)]
    for i, name in enumerate(kw["variants"]):
        row = next(ln for ln in lines[3:5] if ln.split()[0] == name)
        reward, _, reward_sd, length, _, length_sd = row.split()[1:7]
        rewards = [runs[i].summary()["reward"] for runs in single]
        lengths = [runs[i].summary()["length"] for runs in single]
        assert float(reward) == pytest.approx(np.mean(rewards), abs=6e-4)
        assert float(reward_sd) == pytest.approx(np.std(rewards, ddof=1), abs=6e-4)
        assert float(length) == pytest.approx(np.mean(lengths), abs=6e-3)
        assert float(length_sd) == pytest.approx(np.std(lengths, ddof=1), abs=6e-3)
        drift = [runs[i].summary()["length_drift"] for runs in single]
        per_seed = next(ln for ln in lines[5:] if ln.split()[:1] == [name]).split()
        assert [float(x) for x in per_seed[1:4]] == pytest.approx(drift, abs=6e-3)
        assert " ".join(per_seed[4:]) == f"{sum(d > 0 for d in drift)} of 3 seeds"
    assert "n/a" in next(ln for ln in lines[3:5] if ln.startswith("trl.dr_grpo"))  # uniform ω: no corr


def test_cli_demo_bad_seeds(capsys):
    assert main(["demo", *TINY, "--seeds", "0,zero"]) == 1
    assert "seeds" in capsys.readouterr().err


def test_seeds_table_one_seed_and_nan():
    run = tiny_run(eps_dominance=[np.nan, np.nan], length_weight_corr=[np.nan, np.nan])
    text = demo.format_seeds_table([[run]], [4])
    row = text.splitlines()[3].split()
    assert row[:4] == ["x", "1.000", "±", "0.000"] and row.count("n/a") == 2
    assert "+2.00   1 of 1 seeds" in text
