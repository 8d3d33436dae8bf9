"""What this installation of grpokit can do: `grpokit info`."""

from __future__ import annotations

import platform
from typing import Any, Dict

from . import _backend, _core

# The GPU paths of grpokit._cuda: every kernel family is compiled with the module; the hidden × weight
# log-probabilities need cuBLAS too (the CUDA toolkit's or the nvidia-cublas wheel's, docs/gpu.md).
GPU_PATHS = (
    "loss",
    "advantages",
    "estimators",
    "corrections",
    "logprobs",
    "linear_logprobs_cublas",
    "adam_diagnostics",
)


def build_info() -> Dict[str, Any]:
    """Version, CPU engine, whether CUDA kernels were compiled (and why not) and the visible GPUs."""
    info: Dict[str, Any] = {
        "version": _core.__version__,
        "python": platform.python_version(),
        "cpu_engine": "grpokit._core",
        "cpu_simd": _core.cpu_simd_level(),
        "cpu_threads": _core.cpu_max_threads(),
        "cuda_kernels": False,
        "cuda_build": None,
        "cuda_paths": {name: False for name in GPU_PATHS},
        "cuda_devices": 0,
        "cuda_note": None,
    }
    module, why = _backend.load_cuda()
    if module is None:
        info["cuda_note"] = why
        return info
    info["cuda_kernels"] = True
    info["cuda_build"] = module.build_info()
    info["cuda_paths"] = {name: True for name in GPU_PATHS}
    info["cuda_paths"]["linear_logprobs_cublas"] = bool(module.cublas_built())
    count, reason = module.device_count()
    info["cuda_devices"] = count
    if count == 0:
        info["cuda_note"] = f"kernels compiled, but no GPU is usable here: {reason}"
    return info


_SIMD = {
    "avx512": "AVX-512 loops",
    "avx512-clones": "AVX-512 compiler-vectorised loops; GRPOKIT_NO_AVX512 turns the hand-written ones off",
    "avx2": "AVX2 loops",
    "baseline": "baseline-ISA loops",
}


def format_info(info: Dict[str, Any]) -> str:
    lines = [
        f"grpokit {info['version']} (Python {info['python']})",
        f"  CPU engine:    {info['cpu_engine']} ({_SIMD[info['cpu_simd']]}; {info['cpu_threads']} thread"
        f"{'s' if info['cpu_threads'] != 1 else ''} by default)",
        f"  CUDA kernels:  {'compiled (' + info['cuda_build'] + ')' if info['cuda_kernels'] else 'not compiled'}",
        f"  GPU paths:     {', '.join(k for k, v in info['cuda_paths'].items() if v) or 'none'}",
        f"  CUDA devices:  {info['cuda_devices']}",
    ]
    if info["cuda_note"]:
        lines.append(f"  note:          {info['cuda_note']}")
    return "\n".join(lines)
