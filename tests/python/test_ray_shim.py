"""tests/shims/ray: the stand-in that lets verl's FSDP engine import on the GPU machine, where Ray's wheel
cannot travel (scripts/gpu_check.sh, docs/verl.md). It must be enough for the imports of
test_verl_fsdp_gpu.py and must refuse anything else loudly."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

SHIMS = pathlib.Path(__file__).resolve().parents[1] / "shims"


def load_shim():
    spec = importlib.util.spec_from_file_location("ray_shim_under_test", SHIMS / "ray" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shim_defines_only_the_annotation_and_refuses_the_rest():
    shim = load_shim()
    assert isinstance(shim.ObjectRef, type)
    with pytest.raises(RuntimeError, match="ObjectRef cannot be created"):
        shim.ObjectRef()
    with pytest.raises(AttributeError, match=r"ray\.remote, which the shim does not provide"):
        shim.remote  # noqa: B018


def test_verl_engine_imports_with_the_shim_in_place_of_ray():
    pytest.importorskip("verl.workers.engine", exc_type=ImportError)
    code = (
        "import ray, verl.workers.engine, verl.workers.config, verl.workers.utils.losses, "
        "verl.workers.utils.padding, verl.utils.tensordict_utils; print(ray.__file__)"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SHIMS), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert pathlib.Path(out.stdout.strip().splitlines()[-1]) == SHIMS / "ray" / "__init__.py"
