"""verl's own functions, read from the installed verl source and run unchanged.

`import verl` needs ray, tensordict, omegaconf and transformers (verl/protocol.py and the config
modules import them at module level); CI installs verl with --no-deps, so the modules cannot be
imported. The functions grpokit is compared with only need torch and NumPy, so the parity tests take
them from the source files instead: every top-level function (decorators such as verl's registries
dropped), class and constant of a module is executed into a namespace that holds the names its
imports would have bound. Anything that needs a missing dependency fails when it is called, not here.
Tests skip when verl is not installed.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
from collections import defaultdict
from contextlib import contextmanager
from enum import Enum
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def source(rel: str) -> str:
    """The text of verl/<rel>; skips the test when verl is not installed."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("verl is not installed (pip install --no-deps verl==0.9.1)")
    path = os.path.join(list(spec.submodule_search_locations)[0], rel)
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def functions(text: str, names: set) -> str:
    """Source of the named top-level functions of a module, decorators dropped."""
    tree = ast.parse(text)
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            node.decorator_list = []
            out.append(ast.unparse(node))
    missing = names - {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if missing:
        raise AssertionError(f"not in the verl source: {sorted(missing)}")
    return "\n\n".join(out)


class _Config(SimpleNamespace):
    """Stands in for verl's config classes (AlgoConfig, ActorConfig, DictConfig, ...): attribute
    access plus dict-style .get, as verl's code uses both."""

    def get(self, key, default=None):
        return getattr(self, key, default)


def _load(rel: str, ns: dict) -> SimpleNamespace:
    tree = ast.parse(source(rel))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            node.decorator_list = []
        elif not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue  # imports, docstrings, module-level statements
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), f"verl/{rel}", "exec"), ns)  # noqa: S102
        except Exception:  # noqa: BLE001 - a definition that needs an absent dependency: left out
            pass
    return SimpleNamespace(**{k: v for k, v in ns.items() if not k.startswith("__")})


def _base() -> dict:
    return {"torch": torch, "np": np, "math": math, "os": os, "Any": Any, "Optional": Optional,
            "Callable": Callable, "defaultdict": defaultdict, "Enum": Enum, "contextmanager": contextmanager,
            "F": torch.nn.functional, "nn": torch.nn, "get_device_name": lambda: "cpu",
            "get_torch_device": lambda: torch.cpu}


def torch_functional() -> SimpleNamespace:
    """verl.utils.torch_functional (masked_mean, masked_whiten, ...)."""
    return _load("utils/torch_functional.py", _base())


def core_algos() -> SimpleNamespace:
    """verl.trainer.ppo.core_algos: the advantage estimators, policy losses, agg_loss, kl_penalty."""
    groupwise = _load("utils/groupwise.py", _base())
    ns = _base()
    ns.update(verl_F=torch_functional(), as_torch_index=groupwise.as_torch_index,
              group_mean_std=groupwise.group_mean_std, AlgoConfig=_Config, ActorConfig=_Config,
              DictConfig=_Config, deprecated=lambda *a, **k: (lambda f: f))
    return _load("trainer/ppo/core_algos.py", ns)


def rollout_corr_helper() -> SimpleNamespace:
    """verl.trainer.ppo.rollout_corr_helper: rollout IS weights, rejection sampling, mismatch metrics."""
    ns = _base()
    ns.update(verl_F=torch_functional(), DataProto=_Config, RolloutCorrectionConfig=_Config,
              PolicyLossConfig=_Config)
    return _load("trainer/ppo/rollout_corr_helper.py", ns)
