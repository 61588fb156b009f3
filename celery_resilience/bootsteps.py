"""Worker bootsteps: the health heartbeat.

Each worker publishes its host's CPU, memory and load, its active task count and the
user's probes to the store on a timer, so that callers on other machines decide with
the workers' health, not their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import psutil
from celery import bootsteps

from .load import HealthSnapshot
from .load_settings import Probe

__all__ = ["HealthHeartbeat", "AlertMonitorStep", "take_snapshot"]

logger = logging.getLogger("celery_resilience.health")


def take_snapshot(worker: str, at: float, active: int, probes: Mapping[str, Probe]) -> HealthSnapshot:
    """Read the host's resources now; a probe that fails or answers out of range is left out."""
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
        worker=worker,
        at=at,
        cpu=psutil.cpu_percent(interval=None) / 100.0,
        memory=psutil.virtual_memory().percent / 100.0,
        load=load,
        active=active,
        probes=readings,
    )


class HealthHeartbeat(bootsteps.StartStopStep):
    """Publishes this worker's health every ``resilience_heartbeat_interval`` seconds."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.timer_ref: Any = None

    def start(self, worker: Any) -> None:
        from .extension import Resilience

        resilience = Resilience.of(worker.app)
        psutil.cpu_percent(interval=None)  # the first reading only sets the baseline
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
        try:
            snapshot = take_snapshot(
                worker.hostname,
                store.now(),
                len(state.active_requests),
                resilience.settings.load.health_probes,
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
