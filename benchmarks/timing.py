"""The one timer of the benchmark scripts: median wall time of repeated calls after a warm-up."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeat: int, sync: Callable[[], object] = lambda: None) -> float:
    """Seconds per call of ``fn`` (median of ``repeat`` calls after one warm-up call). ``sync`` waits for
    asynchronous work (a CUDA stream) before each clock read."""
    fn()  # warm-up: compilation, caches, allocator
    sync()
    times = []
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
