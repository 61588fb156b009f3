"""Interleaved timing shared by the benchmarks: the machine is noisy, so contenders run
in alternating order, round after round (or by turns within a round), and each reports
its median round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

Contender = Callable[..., Any]


def per_call(func: Contender, calls: int, with_index: bool, first: int = 0) -> float:
    start = time.perf_counter()
    if with_index:
        for index in range(first, first + calls):
            func(index)
    else:
        for _ in range(calls):
            func()
    return (time.perf_counter() - start) / calls


def measure(
    contenders: dict[str, Contender],
    calls: int,
    rounds: int,
    with_index: bool = False,
    turn: int | None = None,
) -> dict[str, float]:
    """Median seconds per call of each contender (``func(i)`` when ``with_index``). With
    ``turn``, a round gives the contenders turns of that many calls in rotation until each
    made ``calls``: a machine whose speed drifts within a round slows them all alike."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for func in contenders.values():  # warm-up: connections, script loading, caches
        per_call(func, min(calls, 200), with_index)
    size = turn or calls
    for round_index in range(rounds):
        order = list(contenders.items())
        if round_index % 2:
            order.reverse()
        spent = dict.fromkeys(contenders, 0.0)
        for first in range(0, calls, size):
            count = min(size, calls - first)
            for name, func in order:
                spent[name] += per_call(func, count, with_index, first) * count
        for name, seconds in spent.items():
            samples[name].append(seconds / calls)
    return {name: statistics.median(values) for name, values in samples.items()}
