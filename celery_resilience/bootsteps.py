"""The worker's bootsteps: the health heartbeat, the alert monitor, the start-up check,
the early release of a fair queue's held work.

Added by ``Resilience(app)`` by name; each looks the app's extension up when the worker
starts and leaves the work to it.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import weakref
from collections import Counter
from datetime import datetime
from typing import Any

from celery import bootsteps
from celery.signals import task_prerun
from celery.worker import state

from .errors import StoreUnavailable
from .extension import Resilience
from .load.heartbeat import WorkerUsage, take_snapshot
from .load.release import RELEASE_INTERVAL, Held, Release
from .monitoring.counters import count_released_early
from .publishing import FAIR_UNTIL, HEADER

__all__ = ["HealthHeartbeat", "AlertMonitorStep", "ConfigurationCheck", "FairRelease"]

# A held task's ETA within this of its header's ``fair_until`` is that hold (seconds).
SAME_HOLD = 1.0

logger = logging.getLogger("celery_resilience.health")


class HealthHeartbeat(bootsteps.StartStopStep):
    """Publishes this worker's health every ``resilience_heartbeat_interval`` seconds."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.timer_ref: Any = None
        self.usage: WorkerUsage | None = None
        self.threads: _WorkerThreads | None = None

    def start(self, worker: Any) -> None:
        resilience = Resilience.of(worker.app)
        pool = type(getattr(worker, "pool", None)).__module__
        prefork = "prefork" in pool
        parallelism = int(getattr(worker, "concurrency", 1) or 1) if prefork else 1
        if not prefork:  # one process runs every slot (a prefork child reports its own one)
            resilience.fairness.slots = int(getattr(worker, "concurrency", 1) or 1)
        if pool == "celery.concurrency.thread":
            self.threads = _WorkerThreads(worker.app)
        self.usage = WorkerUsage(parallelism, resilience.clock.monotonic, self.threads)
        # The first reading only sets the start: it would measure the worker's own boot.
        self.usage.cpu()
        self.timer_ref = worker.timer.call_repeatedly(
            resilience.settings.load.heartbeat_interval, self.beat, (worker,), priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None
        if self.threads is not None:
            self.threads.close()
            self.threads = None

    def beat(self, worker: Any) -> None:
        resilience = Resilience.of(worker.app)
        store = resilience.store
        usage = self.usage
        cpu = usage.cpu() if usage is not None else None
        if usage is None or cpu is None:
            return
        try:
            snapshot = take_snapshot(
                worker.hostname,
                store.now(),
                len(state.active_requests),
                resilience.settings.load.health_probes,
                cpu,
                usage.memory(),
            )
            store.publish_health(snapshot)
        except StoreUnavailable as error:
            logger.warning("could not publish this worker's health: %s", error)


class _WorkerThreads:
    """A thread-pool worker's own threads, by native id: the one that starts it (and runs
    its consumer) and each that has begun one of its app's tasks. Whatever else runs in
    the process is not the worker's load."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ids = {threading.get_native_id()}
        # Celery before 5.6 tells bound methods apart by their function alone: without a
        # uid of its own, a second worker's receiver would replace nothing and never run.
        # Held weakly: a worker stopped without its bootsteps' stop leaves nothing behind.
        self._uid = f"celery_resilience.worker_threads.{id(self)}"
        task_prerun.connect(self._began, weak=True, dispatch_uid=self._uid)

    def _began(self, sender: Any = None, **_: Any) -> None:
        # Run before every task: a thread already known costs one set lookup.
        native = threading.get_native_id()
        if native not in self.ids and getattr(sender, "app", None) is self.app:
            self.ids.add(native)

    def __call__(self) -> frozenset[int]:
        return frozenset(self.ids)

    def close(self) -> None:
        task_prerun.disconnect(self._began, dispatch_uid=self._uid)


class AlertMonitorStep(bootsteps.StartStopStep):
    """Runs the cluster's alert monitor on this worker; it acts only while holding the lease."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.timer_ref: Any = None
        self.monitor: Any = None

    def start(self, worker: Any) -> None:
        resilience = Resilience.of(worker.app)
        if not resilience.sentry.ready():
            logger.info("no Sentry client and no resilience_sentry_dsn: alerts are logged only")
        self.monitor = resilience.alert_monitor(f"{worker.hostname}:{os.getpid()}")
        self.timer_ref = worker.timer.call_repeatedly(
            resilience.settings.monitoring.alert_interval, self.monitor.tick, priority=10
        )

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None


class ConfigurationCheck(bootsteps.StartStopStep):
    """Stops a worker at start-up when a fallback chain names a task no module registered:
    the worker is the one process that imports every task."""

    def start(self, worker: Any) -> None:
        Resilience.of(worker.app).check_chains()


class FairRelease(bootsteps.StartStopStep):
    """Starts held work of the fair queues ordered by delay once this worker idles with
    nothing ready (``load/release.py``): without it, a flood's held work keeps the spacing
    of its old share after the other tenants leave, and the queue drains slower than FIFO."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.timer_ref: Any = None
        self.queues: frozenset[str] = frozenset()
        self.release = Release(1)
        self.started: weakref.WeakSet[Any] = weakref.WeakSet()  # the tasks it started early

    def start(self, worker: Any) -> None:
        fairness = Resilience.of(worker.app).fairness
        self.queues = frozenset(q for q, p in fairness.policies.items() if p.order == "delay")
        if not self.queues:
            return
        self.release = Release(int(getattr(worker, "concurrency", 1) or 1))
        self._next(worker)

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def _next(self, worker: Any) -> None:
        # At irregular intervals: holds spaced by the look's own interval would otherwise
        # each be started by the timer just before every look, which then never finds the
        # slot free between them.
        after = RELEASE_INTERVAL * random.uniform(0.5, 1.0)
        self.timer_ref = worker.timer.call_after(after, self.tick, (worker,), priority=5)

    def tick(self, worker: Any) -> None:
        try:
            self._look(worker)
        finally:
            self._next(worker)

    def _look(self, worker: Any) -> None:
        # Run by the worker's timer, which also runs the holds' own entries: a hold cannot
        # end between being found here and being started.
        free = self.release.slots - len(state.reserved_requests)
        own = sum(1 for request in list(self.started) if request in state.reserved_requests)
        try:  # the held tasks are looked at only when a slot is not taken by others' work
            held = self._held(worker.app) if free + own > 0 else []
        except RuntimeError:  # a thread-pool consumer added a hold while we looked: next tick
            return
        resilience = Resilience.of(worker.app)
        started: Counter[str] = Counter()
        for item in self.release.choose(free, held, resilience.fairness.ready, own):
            self.started.add(item.request)
            item.release()
            started[item.queue] += 1
        if started:
            count_released_early(resilience.record, started)

    def _held(self, app: Any) -> list[Held]:
        """This worker's tasks held on its timer by a fair queue of this app."""
        found: list[Held] = []
        for request in list(getattr(state, "scheduled_requests", ())):
            # A Celery that does not keep the hold's entry leaves every hold to its timer.
            entry = getattr(request, "_eta_timer_entry", None)
            if entry is None or entry.canceled or getattr(request.task, "app", None) is not app:
                continue
            context = (request.request_dict or {}).get(HEADER)
            queue = (request.delivery_info or {}).get("routing_key")
            if not isinstance(context, dict) or queue not in self.queues or context.get("paced"):
                continue
            until = context.get(FAIR_UNTIL)
            try:
                eta = datetime.fromisoformat(str(request.eta)).timestamp()
            except ValueError:
                continue
            # Only a hold of fairness alone: not the caller's countdown, a retry's, or a
            # budget's wait that carry the same header on.
            if isinstance(until, int | float) and abs(eta - until) <= SAME_HOLD:
                found.append(Held(eta, queue, _starter(entry), request))
        return found


def _starter(entry: Any) -> Any:
    def start() -> None:
        entry.cancel()
        entry()  # the worker's own apply of a held task (or its rate-limited apply)

    return start
