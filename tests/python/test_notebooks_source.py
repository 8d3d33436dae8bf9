"""The committed notebooks are exactly what notebooks/make_notebooks.py writes, with outputs cleared."""

import importlib.util
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")

DIR = pathlib.Path(__file__).resolve().parents[2] / "notebooks"


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", DIR / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_notebooks_match_their_generator():
    gen = _generator()
    names = sorted(p.stem for p in DIR.glob("*.ipynb"))
    assert (
        names
        == sorted(gen.NOTEBOOKS)
        == [
            "01_quickstart",
            "02_variants",
            "03_prefix_bias",
            "04_adamw_reward_scale",
            "05_momentum",
            "06_stationary",
            "07_trl",
            "08_momentum_guard",
            "09_jax",
        ]
    )
    for name, cells in gen.NOTEBOOKS.items():
        on_disk = nbformat.read(DIR / f"{name}.ipynb", as_version=4)
        assert on_disk == gen.build(name, cells), f"{name}.ipynb differs: run python notebooks/make_notebooks.py"
        for cell in on_disk.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
