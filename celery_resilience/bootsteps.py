"""Worker bootsteps: the health heartbeat and the alert monitor.

Each worker publishes its own CPU and memory use, its active task count and the user's
probes to the store on a timer, so that callers on other machines decide with the
workers' health, not their own. What a heartbeat measures is the worker itself (its
process and its pool's processes), not the host it runs on: another job on the same
machine, or a web process publishing beside it, does not change anybody's limits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil
from celery import bootsteps

from .load import HealthSnapshot
from .load_settings import Probe

__all__ = ["HealthHeartbeat", "AlertMonitorStep", "ConfigurationCheck", "WorkerUsage", "take_snapshot"]

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
    most: one for a thread pool under the GIL, the concurrency for prefork)."""

    def __init__(self, parallelism: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self._process = psutil.Process()
        self._cores = max(1, min(available_cores(), parallelism))
        self._clock = clock
        self._last: tuple[float, float] | None = None

    def _cpu_seconds(self) -> float:
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


class HealthHeartbeat(bootsteps.StartStopStep):
    """Publishes this worker's health every ``resilience_heartbeat_interval`` seconds."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.timer_ref: Any = None
        self.usage = WorkerUsage()

    def start(self, worker: Any) -> None:
        from .extension import Resilience

        resilience = Resilience.of(worker.app)
        prefork = "prefork" in type(getattr(worker, "pool", None)).__module__
        self.usage = WorkerUsage(int(getattr(worker, "concurrency", 1) or 1) if prefork else 1)
        # The first reading only sets the start: it would measure the worker's own boot.
        self.usage.cpu()
        self.timer_ref = worker.timer.call_repeatedly(
            resilience.settings.load.heartbeat_interval, self.beat, (worker,), priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def beat(self, worker: Any) -> None:
        from celery.worker import state

        from .errors import StoreUnavailable
        from .extension import Resilience

        resilience = Resilience.of(worker.app)
        store = resilience.store
        cpu = self.usage.cpu()
        if cpu is None:
            return
        try:
            snapshot = take_snapshot(
                worker.hostname,
                store.now(),
                len(state.active_requests),
                resilience.settings.load.health_probes,
                cpu,
                self.usage.memory(),
            )
            store.publish_health(snapshot)
        except StoreUnavailable as error:
            logger.warning("could not publish this worker's health: %s", error)


class AlertMonitorStep(bootsteps.StartStopStep):
    """Runs the cluster's alert monitor on this worker; it acts only while holding the lease."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.timer_ref: Any = None
        self.monitor: Any = None

    def start(self, worker: Any) -> None:
        from .alerting import AlertMonitor
        from .extension import Resilience

        resilience = Resilience.of(worker.app)
        if not resilience.sentry.ready():
            logger.info("no Sentry client and no resilience_sentry_dsn: alerts are logged only")
        self.monitor = AlertMonitor(resilience, f"{worker.hostname}:{os.getpid()}")
        self.timer_ref = worker.timer.call_repeatedly(
            resilience.settings.alert_interval, self.monitor.tick, priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None


class ConfigurationCheck(bootsteps.StartStopStep):
    """Stops a worker at start-up when a fallback chain names a task no module registered:
    the worker is the one process that imports every task."""

    def start(self, worker: Any) -> None:
        from .extension import Resilience

        Resilience.of(worker.app).check_chains()
