"""One declaration of a public function's arguments, shared by its framework forms.

``grpokit.policy_loss`` and ``grpokit.advantages`` state their arguments and defaults once; their torch
and JAX forms (``grpokit.torch``, ``grpokit.jax``) take the same arguments, less those a framework has no
use for, without restating them: each is written ``f(<the positional parameters>, **kw)``, decorated
with an :class:`Arguments` of the NumPy function, which gives it that function's signature (so
``help()`` and ``inspect.signature`` show every argument with its default) and reads ``kw`` into the
keyword arguments with their defaults filled in.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, Tuple, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Arguments:
    """The parameters of ``source``, less the names in ``drop``."""

    def __init__(self, source: Callable[..., Any], drop: Iterable[str] = ()) -> None:
        drop = set(drop)
        sig = inspect.signature(source)
        params = [p for p in sig.parameters.values() if p.name not in drop]
        self.signature = sig.replace(parameters=params)
        self.positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        # plain containers: split() runs on every call, also inside torch.compile's tracing
        self.keywords = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
        self.takes_more = any(p.kind is p.VAR_KEYWORD for p in params)  # source's **overrides

    def __call__(self, f: F) -> F:
        """Decorator: ``f(<source's positional parameters>, **kw)`` presents source's signature."""
        own = inspect.signature(f)
        names = [p.name for p in own.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        if names != self.positional:  # internal wiring, not user input
            raise TypeError(f"{f.__qualname__}: positional parameters {names}, expected {self.positional}")
        f.__signature__ = self.signature.replace(return_annotation=own.return_annotation)  # type: ignore[attr-defined]
        return f

    def split(self, name: str, kw: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """``kw`` as (every keyword-only argument, given or its default; the others, source's ``**``
        arguments). Without a ``**`` parameter in source, another name is the TypeError Python raises."""
        given = {k: kw.get(k, default) for k, default in self.keywords.items()}
        rest = {k: v for k, v in kw.items() if k not in self.keywords}
        if rest and not self.takes_more:
            raise TypeError(f"{name}() got an unexpected keyword argument {next(iter(rest))!r}")
        return given, rest
