"""Shared pytest configuration: deterministic hypothesis, offline Hugging Face, headless matplotlib."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_available() -> bool:
    try:
        from grpokit import _backend

        module, _ = _backend.load_cuda()
        return module is not None and module.device_count()[0] > 0
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


HAS_CUDA = _cuda_available()


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="no usable CUDA device (GPU tests run on a GPU machine)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not item.keywords: it holds the rootdir name
            item.add_marker(skip)
