from typing import Any

__version__: str

def advantages(
    rewards: Any,
    group_ids: Any,
    out: Any,
    group_size: int,
    baseline: str,
    std: str,
    std_scope: str,
    epsilon: float,
    stream: int = 0,
) -> None: ...
