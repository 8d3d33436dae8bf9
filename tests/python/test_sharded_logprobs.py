"""Vocabulary-parallel log-probabilities (grpokit.torch.vocab_parallel_*) in 2 and 4 gloo processes
against the unsharded ops: values, entropies and gradients, float32 and float64, uneven shards in any
rank order, ids in every shard, −inf logits; top_k / top_p / min_p and keep= on the shards (ties at
the shard borders, per-row and off values, both conventions); the errors for inconsistent shards and
out-of-range ids, bad sampler parameters and kept sets;
and, where megatron-core is installed, against its vocab_parallel_cross_entropy. The worker bodies are
in sharded_workers.py (one spawn per world size: starting the processes is most of the time)."""

from __future__ import annotations

import importlib.util
import socket

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
mp = pytest.importorskip("torch.multiprocessing")
pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

import sharded_workers  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_megatron() -> bool:
    try:
        return importlib.util.find_spec("megatron.core") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("world", [2, 4])
def test_vocab_parallel_matches_unsharded(world):
    extra = ["errors", "sampler_errors", "compile"] + ["megatron"] * _has_megatron() if world == 2 else ["subgroups"]
    cases = ["logits", "linear", "sampler", "keep", "linear_sampler", *extra]  # one spawn per world size: the slow part
    mp.spawn(sharded_workers.run, args=(world, _free_port(), cases), nprocs=world, join=True)
