"""`grpokit info`: what this installation can do (CI reads its JSON to check the CUDA build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpokit
from grpokit import _core
from grpokit.info import build_info, format_info


def test_info_fields_and_text():
    info = build_info()
    assert info["version"] == grpokit.__version__
    assert info["cpu_simd"] in ("avx512", "avx512-clones", "avx2", "baseline")
    assert info["cpu_threads"] >= 1
    assert isinstance(info["cuda_kernels"], bool)
    if not info["cuda_kernels"] or info["cuda_devices"] == 0:
        assert info["cuda_note"]  # says why there is no GPU path
    text = format_info(info)
    assert "CPU engine" in text and "CUDA kernels" in text and "thread" in text


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "grpokit", "info", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout


def test_cli_json_and_the_avx512_switch():
    info = json.loads(_cli("--json"))
    assert info["cpu_simd"] == _core.cpu_simd_level()
    off = json.loads(_cli("--json", env={"GRPOKIT_NO_AVX512": "1"}))
    if info["cpu_simd"] == "avx512":  # the hand-written loops are off, the clones stay
        assert off["cpu_simd"] == "avx512-clones"
    else:
        assert off["cpu_simd"] == info["cpu_simd"]


def test_cli_json_reports_the_gpu_paths_built():
    """cuda_paths: every GPU path by name; all False without the CUDA module, and with it every kernel
    family True and the cuBLAS path as the module was built (CI builds it with the nvidia-cublas wheel)."""
    from grpokit import _backend
    from grpokit.info import GPU_PATHS

    info = json.loads(_cli("--json"))
    paths = info["cuda_paths"]
    assert list(paths) == list(GPU_PATHS) and "linear_logprobs_cublas" in paths
    assert all(isinstance(v, bool) for v in paths.values())
    module, _ = _backend.load_cuda()
    if module is None:
        assert not info["cuda_kernels"] and not any(paths.values())
    else:
        assert info["cuda_kernels"]
        assert paths["linear_logprobs_cublas"] == module.cublas_built()
        assert all(v for k, v in paths.items() if k != "linear_logprobs_cublas")
    assert "GPU paths" in format_info(info)
