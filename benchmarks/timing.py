"""Interleaved timing shared by the benchmarks: the machine is noisy, so contenders run
in alternating order, round after round, and each reports its median round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

Contender = Callable[..., Any]


def per_call(func: Contender, calls: int, with_index: bool) -> float:
    start = time.perf_counter()
    if with_index:
        for index in range(calls):
            func(index)
    else:
        for _ in range(calls):
            func()
    return (time.perf_counter() - start) / calls


def measure(
    contenders: dict[str, Contender], calls: int, rounds: int, with_index: bool = False
) -> dict[str, float]:
    """Median seconds per call of each contender (``func(i)`` when ``with_index``)."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for func in contenders.values():  # warm-up: connections, script loading, caches
        per_call(func, min(calls, 200), with_index)
    for round_index in range(rounds):
        order = list(contenders.items())
        if round_index % 2:
            order.reverse()
        for name, func in order:
            samples[name].append(per_call(func, calls, with_index))
    return {name: statistics.median(values) for name, values in samples.items()}
