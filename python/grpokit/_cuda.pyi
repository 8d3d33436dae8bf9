from typing import Any, Tuple

__version__: str

def device_count() -> Tuple[int, str]: ...
def build_info() -> str: ...
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
