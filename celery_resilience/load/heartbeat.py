"""A worker's heartbeat: what the worker itself uses, and the user's probes.

What a heartbeat measures is the worker itself (its process and its pool's processes,
or, for a thread pool, the worker's own threads), not the host it runs on: another job on
the same machine, a web process publishing beside it, or other work in the same process
(a server embedding a worker, a test harness) does not change anybody's limits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping

import psutil

from .settings import Probe
from .signals import HealthSnapshot

__all__ = ["WorkerUsage", "take_snapshot", "available_cores"]

logger = logging.getLogger("celery_resilience.health")


def available_cores() -> int:
    """CPUs this process may run on (its affinity), else the machine's count."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return psutil.cpu_count() or 1


class WorkerUsage:
    """The CPU and memory a worker uses: its own process and its pool's, over the time
    between two readings, as a share of the CPUs it can use (``parallelism`` of them at
    most: one for a thread pool under the GIL, the concurrency for prefork).

    ``threads`` names the native ids of the worker's own threads when the worker shares
    its process: only their CPU counts then, since a thread pool's process may hold work
    that is not the worker's (a web server, a load generator, fake services) whose CPU
    would otherwise turn the worker's limits down for load the worker is not under."""

    def __init__(
        self,
        parallelism: int,
        monotonic: Callable[[], float],
        threads: Callable[[], Collection[int]] | None = None,
    ) -> None:
        self._process = psutil.Process()
        self._cores = max(1, min(available_cores(), parallelism))
        self._clock = monotonic
        self._threads = threads
        self._last: tuple[float, float] | None = None

    def _cpu_seconds(self) -> float:
        if self._threads is not None:
            # A thread that ended since the last reading takes its seconds with it: the
            # difference is clamped at zero, and the next reading is exact again.
            wanted = self._threads()
            return sum(t.user_time + t.system_time for t in self._process.threads() if t.id in wanted)
        own = self._process.cpu_times()
        # Reaped children (recycled pool processes) count in children_*; live ones apart.
        total = own.user + own.system + own.children_user + own.children_system
        for child in self._process.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:  # it ended between the listing and the reading
                continue
            total += times.user + times.system
        return total

    def memory(self) -> float:
        rss = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                continue
        return min(1.0, rss / psutil.virtual_memory().total)

    def cpu(self) -> float | None:
        """CPU share since the previous reading; None for the first (it only sets the start)."""
        now, used = self._clock(), self._cpu_seconds()
        last, self._last = self._last, (now, used)
        if last is None or now <= last[0]:
            return None
        return min(1.0, max(0.0, used - last[1]) / ((now - last[0]) * self._cores))


def take_snapshot(
    worker: str, at: float, active: int, probes: Mapping[str, Probe], cpu: float, memory: float
) -> HealthSnapshot:
    """The worker's heartbeat; a probe that fails or answers out of range is left out."""
    readings: dict[str, float] = {}
    for name, probe in probes.items():
        try:
            value = float(probe())
        except Exception as error:  # a user's probe may fail in any way; the heartbeat must not
            logger.warning("health probe %r failed: %s", name, error)
            continue
        if 0.0 <= value <= 1.0:
            readings[name] = value
        else:
            logger.warning("health probe %r answered %r, outside [0, 1]", name, value)
    load = os.getloadavg()[0] / (psutil.cpu_count() or 1) if hasattr(os, "getloadavg") else 0.0
    return HealthSnapshot(
        worker=worker, at=at, cpu=cpu, memory=memory, load=load, active=active, probes=readings
    )
