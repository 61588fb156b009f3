"""A thread-pool worker sharing its process with other work reads its own threads' CPU: the
other work's load changes no limit, the worker's own tasks' load does."""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_resilience import Resilience
from celery_resilience.load.signals import HealthSnapshot
from tests.integration.conftest import wait_for


def build() -> tuple[Celery, Any]:
    app = Celery("embedded", broker="memory://localhost/", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        resilience_store_url="memory://",
        resilience_heartbeat_interval=0.2,
        resilience_adaptive_interval=0.1,
        # A low step, so that a task's load shows on a machine that other processes keep
        # busy too (its thread then gets a share of a core, not all of one).
        resilience_resource_thresholds=[[0.25, 0.5]],
        broker_transport_options={"polling_interval": 0.01},
        worker_hijack_root_logger=False,
    )
    Resilience(app)

    @app.task(name="embedded.burn", shared=False)
    def burn(seconds: float) -> float:
        """Spends ``seconds`` of this thread's own CPU time."""
        started = time.thread_time()
        while time.thread_time() - started < seconds:
            sum(range(10_000))
        return time.thread_time() - started

    return app, burn


def fresh(app: Celery, since: float) -> list[HealthSnapshot]:
    return [s for s in Resilience.of(app).store.read_health() if s.at > since]


def test_other_work_in_the_process_is_not_the_workers_load() -> None:
    """A busy thread beside an idle thread-pool worker leaves its CPU reading and its limits alone."""
    app, _ = build()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))

    spinner = threading.Thread(target=spin, name="not-the-worker", daemon=True)
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="ERROR"):
        spinner.start()
        try:
            since = Resilience.of(app).store.now() + 0.3  # readings wholly after the spinner began
            readings: dict[float, HealthSnapshot] = {}  # the store keeps a worker's latest only

            def three_readings() -> bool:
                readings.update((s.at, s) for s in fresh(app, since))
                return len(readings) >= 3

            wait_for(three_readings, timeout=20)
            assert all(s.cpu < 0.25 for s in readings.values()), readings
            assert Resilience.of(app).load.factors().resources == 1.0
        finally:
            stop.set()
            spinner.join(timeout=5)


def test_the_workers_own_tasks_are_its_load() -> None:
    """A task burning CPU on a pool thread raises the worker's reading and lowers its limits."""
    app, burn = build()
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="ERROR"):
        since = Resilience.of(app).store.now()
        result = burn.delay(3.0)
        wait_for(lambda: any(s.cpu > 0.3 for s in fresh(app, since)), timeout=20)
        wait_for(lambda: Resilience.of(app).load.factors().resources == 0.5, timeout=5)
        assert result.get(timeout=20, disable_sync_subtasks=False) >= 3.0
