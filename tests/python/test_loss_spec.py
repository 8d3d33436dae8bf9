"""The LossSpec record is generated from the engine's one declaration of its fields; one version; the
preset table's advantage column."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import pickle
import typing
from types import SimpleNamespace

import numpy as np
import pytest

import grpokit
from grpokit import _core, _presets, _variants

ENGINE = _core.loss_spec_fields()


def _same(a, b):
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_record_fields_are_the_engine_fields_in_order():
    fields = dataclasses.fields(grpokit.LossSpec)
    assert [f.name for f in fields] == [f["name"] for f in ENGINE]
    assert {"ratio", "aggregation", "beta", "num_items_in_batch", "seq_count_nonempty"} <= {f.name for f in fields}
    hints = typing.get_type_hints(grpokit.LossSpec)
    for f, e in zip(fields, ENGINE):
        if e["kind"] == "rule":
            assert hints[f.name] is str and f.default == e["default"] and f.default in e["values"]
        elif e["kind"] == "flag":
            assert hints[f.name] is bool and f.default is e["default"]
        elif e["kind"] == "real":
            assert hints[f.name] is float and f.default == e["default"]
        else:  # unsettable / count: None is the engine's unset value
            assert hints[f.name] == typing.Optional[float]
            assert f.default == (None if _same(e["default"], e["unset"]) else e["default"])


def test_record_defaults_reach_the_engine_as_its_own_defaults():
    sent = grpokit.LossSpec().engine_fields()
    for e in ENGINE:
        assert _same(sent[e["name"]], e["default"]), e["name"]
    # spot checks of the C++ declaration
    spec = grpokit.LossSpec()
    assert (spec.epsilon_low, spec.epsilon_high, spec.is_max, spec.delta) == (0.2, 0.2, 3.0, None)
    assert spec.num_items_in_batch is None and sent["num_items_in_batch"] == -1.0
    assert sent["delta"] == math.inf and sent["log_ratio_min"] == -math.inf
    assert math.isnan(sent["off_policy_mask_threshold"])
    assert grpokit.LossSpec(is_max=None).engine_fields()["is_max"] == math.inf


def test_rule_names_come_from_the_engine_tables():
    for e in ENGINE:
        if e["kind"] != "rule":
            assert "values" not in e
            continue
        assert _core.loss_spec_enum_values(e["name"]) == e["values"]
        assert len(e["docs"]) == len(e["values"]) and all(e["docs"])
        for name in e["values"]:  # every listed name parses in C++ and is accepted by the record
            assert getattr(grpokit.LossSpec().replace(**{e["name"]: name}), e["name"]) == name
            _core.validate_loss_spec({e["name"]: name})
            assert f"``{name}``" in grpokit.LossSpec.__doc__
        with pytest.raises(ValueError, match=e["name"]):
            grpokit.LossSpec().replace(**{e["name"]: "no_such_rule"})
    assert _core.loss_spec_enum_values("ratio") == ["token", "sequence", "sequence_token", "sequence_sum"]


def test_record_methods_and_identity():
    spec = grpokit.LossSpec(beta=0.1)
    assert grpokit.LossSpec.__module__ == "grpokit._presets" and grpokit.LossSpec.__name__ == "LossSpec"
    assert spec == grpokit.LossSpec(beta=0.1) and hash(spec) == hash(grpokit.LossSpec(beta=0.1))
    assert pickle.loads(pickle.dumps(spec)) == spec and dataclasses.replace(spec, beta=0.2).beta == 0.2
    assert spec.replace(epsilon=0.3).epsilon_high == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.beta = 0.2  # type: ignore[misc]
    with pytest.raises(ValueError, match="beta: None is not allowed"):
        grpokit.LossSpec(beta=None).engine_fields()


@pytest.mark.parametrize("name", ["num_items_in_batch", "num_sequences", "max_completion_length"])
def test_negative_counts_are_refused_not_read_as_unset(name):
    with pytest.raises(ValueError, match=name):
        grpokit.LossSpec(**{name: -5}).engine_fields()
    with pytest.raises(ValueError, match=name):
        grpokit.LossSpec(**{name: -1.0}).engine_fields()  # the engine's sentinel is not a user value
    with pytest.raises(ValueError, match=name):
        grpokit.LossSpec().replace(**{name: -5})
    with pytest.raises(ValueError, match=name):  # the engine's own check (other callers than Python)
        _core.validate_loss_spec({name: -5.0})
    _core.validate_loss_spec({name: -1.0})  # unset
    assert grpokit.LossSpec(**{name: 7}).engine_fields()[name] == 7
    lp = np.log(np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=name):
        grpokit.policy_loss(lp, lp, np.array([1.0, -1.0]), np.ones((2, 3), bool), **{name: -5})


def test_one_version():
    assert grpokit.__version__ == _core.__version__ == importlib.metadata.version("grpokit")


def test_every_preset_row_holds_its_advantage_convention():
    rows = grpokit.presets()
    rewards = np.array([1.0, 0.0, 2.0, 0.5])
    for name, row in rows.items():
        adv = row["advantages"]
        assert set(adv) == {"std", "epsilon", "std_scope"}, name
        assert _variants.default_advantage_options(name) == adv
        assert dict(_variants.make(name).advantage_options) == adv
        np.asarray(grpokit.advantages(rewards, 2, **adv))  # a valid grpokit.advantages call
        if name.startswith("trl."):
            assert adv == {"std": "sample", "epsilon": 1e-4, "std_scope": "group"}
        if name.startswith("verl."):
            assert adv == {"std": "sample", "epsilon": 1e-6, "std_scope": "group"}
    with_std = {n for n, r in rows.items() if n.startswith("paper.") and r["advantages"]["std"] != "none"}
    assert with_std == {
        "paper.grpo_r1",
        "paper.gspo",
        "paper.gspo_token",
        "paper.dapo",
        "paper.cppo",
        "paper.cispo",
        "paper.gcpo",
    }
    assert rows["paper.dr_grpo"]["advantages"]["std"] == "none"
    # a copy: editing what presets() returns changes no row
    rows["trl.grpo"]["advantages"]["std"] = "none"
    assert grpokit.presets()["trl.grpo"]["advantages"]["std"] == "sample"


def test_the_column_drives_compare():
    rewards = np.array([1.0, 0.0, 3.0, 1.0])
    batch = dict(rewards=rewards, group_size=2, logp=np.log(np.full((4, 3), 0.5)))
    res = grpokit.compare(batch, presets=["paper.dr_grpo", "paper.grpo_r1", "trl.grpo"])
    for name in ("paper.dr_grpo", "paper.grpo_r1", "trl.grpo"):
        want = grpokit.advantages(rewards, 2, **grpokit.presets()[name]["advantages"])
        np.testing.assert_allclose(res.advantages[name], np.asarray(want))
    assert not np.allclose(res.advantages["paper.dr_grpo"], res.advantages["paper.grpo_r1"])


def test_trl_epsilon_high_unset_follows_epsilon_as_stock_trl():
    assert _presets.epsilon_high_is_cap(grpokit.LossSpec(surrogate="logp", logp_weight="cap"))
    assert not _presets.epsilon_high_is_cap(grpokit.LossSpec())
    pytest.importorskip("torch")
    trl = pytest.importorskip("trl")
    gtrl = pytest.importorskip("grpokit.integrations.trl")
    defaults = {n: f.default for n, f in trl.GRPOConfig.__dataclass_fields__.items() if not callable(f.default)}

    def spec(loss_type, **cfg):
        return gtrl.spec_from_config(SimpleNamespace(**{**defaults, "loss_type": loss_type, **cfg}))

    assert defaults["epsilon_high"] is None
    # stock TRL sets epsilon_high = epsilon for every loss_type, CISPO's raw cap included (a trap the trainer
    # warns about, docs/trl.md); the preset row outside the trainer keeps CISPO's recommended 5.0
    assert spec("cispo").epsilon_high == 0.2 and _presets.resolve("trl.cispo", {}).epsilon_high == 5.0
    assert spec("cispo", epsilon_high=4.0).epsilon_high == 4.0
    assert (spec("grpo", epsilon=0.3).epsilon_low, spec("grpo", epsilon=0.3).epsilon_high) == (0.3, 0.3)
    assert spec("dapo", epsilon=0.3, epsilon_high=0.28).epsilon_high == 0.28
