"""grpokit's XLA FFI handlers (private; use grpokit.jax). Built only when jax was importable at build time."""

from typing import Any, Dict, Optional, Sequence, Tuple

def handlers() -> Dict[str, Any]: ...
def check(
    op: str,
    params: str,
    inputs: Sequence[Optional[Tuple[str, Sequence[int]]]],
    outputs: Sequence[Optional[Tuple[str, Sequence[int]]]],
) -> None: ...
