"""The stubs (_core.pyi, _cuda.pyi) against the built modules, argument by argument.

mypy.stubtest (scripts/test.sh) checks that every name exists on both sides, but it cannot read a
pybind11 function's signature; pybind11 writes it as the docstring's first line, so this test
compares each stub's parameter names, order and defaults with it."""

from __future__ import annotations

import ast
import pathlib

import pytest

import grpokit
from grpokit import _backend, _core

_STUB_DIR = pathlib.Path(grpokit.__file__).parent


def _split_top_level(s: str) -> list:
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + ([cur.strip()] if cur.strip() else [])


def _runtime_params(fn) -> list:
    """[(name, default or None)] from pybind11's signature line "name(a: T, b: T = 0) -> R"."""
    first = fn.__doc__.splitlines()[0]
    inner = first[first.index("(") + 1 : first.rindex(") ->")]
    out = []
    for p in _split_top_level(inner):
        name, _, rest = p.partition(":")
        default = rest.split(" = ", 1)[1] if " = " in rest else None
        if name.strip() != "self":
            out.append((name.strip(), None if default is None else ast.literal_eval(default)))
    return out


def _stub_functions(path: pathlib.Path) -> dict:
    """{qualified name: [(name, default or None)]} of the stub's functions and methods."""
    tree = ast.parse(path.read_text())
    found = {}

    def add(prefix, node):
        if isinstance(node, ast.FunctionDef) and not any(
            isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list
        ):
            args = node.args.args
            defaults = [None] * (len(args) - len(node.args.defaults)) + [
                ast.literal_eval(d) for d in node.args.defaults
            ]
            found[prefix + node.name] = [(a.arg, d) for a, d in zip(args, defaults) if a.arg != "self"]

    for node in tree.body:
        add("", node)
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for sub in node.body:
                add(node.name + ".", sub)
    return found


def _check(module, stub_name):
    stubs = _stub_functions(_STUB_DIR / stub_name)
    assert stubs, stub_name
    for qual, params in stubs.items():
        obj = module
        for part in qual.split("."):
            obj = getattr(obj, part)
        assert _runtime_params(obj) == params, qual


def test_core_stub_matches_the_module():
    _check(_core, "_core.pyi")


def test_cuda_stub_matches_the_module():
    cuda, why = _backend.load_cuda()
    if cuda is None:
        pytest.skip(f"no _cuda module: {why}")
    _check(cuda, "_cuda.pyi")
    shared = [n for n in dir(cuda) if not n.startswith("_") and hasattr(_core, n)]
    for name in shared:  # _cuda.pyi re-exports these from _core.pyi: the bindings must agree
        assert _runtime_params(getattr(cuda, name)) == _runtime_params(getattr(_core, name)), name
