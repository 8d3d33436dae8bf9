"""A stand-in for Ray, for one purpose: importing verl's FSDP model engine on the GPU machine.

verl imports ``ray`` at module level (``verl/protocol.py``) and uses only ``ray.ObjectRef`` in type
annotations on the path that ``tests/python/test_verl_fsdp_gpu.py`` runs (one process, no Ray actors).
Ray's wheel (~80 MB) does not fit the 64 MiB that travels to the GPU machine, so
``scripts/gpu_check.sh`` puts this folder on ``PYTHONPATH`` there when the real Ray is absent. Anything
else verl asks of Ray fails loudly here instead of silently doing nothing.
"""

from typing import NoReturn

__version__ = "0+grpokit.shim"


class ObjectRef:
    """Placeholder for Ray's object reference type (annotations only)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("ray shim (tests/shims/ray): ObjectRef cannot be created; install ray")


def __getattr__(name: str) -> NoReturn:
    raise AttributeError(
        f"ray shim (tests/shims/ray): verl used ray.{name}, which the shim does not provide; install ray"
    )
