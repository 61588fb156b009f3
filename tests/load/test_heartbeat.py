"""A worker's heartbeat: its own readings, and the user's probes kept only when sane."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from celery_resilience.load.heartbeat import WorkerUsage, take_snapshot
from celery_resilience.load.signals import cluster_health, health_severity, step_multiplier


def broken() -> float:
    raise RuntimeError("pool unreachable")


def test_snapshot_reads_the_worker_and_the_users_probes(caplog: pytest.LogCaptureFixture) -> None:
    """A heartbeat reads the worker's own processes; a failing or out-of-range probe is dropped."""
    probes = {"db": lambda: 0.95, "broken": broken, "silly": lambda: 7.0}
    usage = WorkerUsage(1, time.monotonic)
    assert usage.cpu() is None  # the first reading only sets the start
    sum(range(200_000))
    with caplog.at_level(logging.WARNING, "celery_resilience"):
        snapshot = take_snapshot("w1", 10.0, 2, probes, usage.cpu() or 0.0, usage.memory())
    assert 0.0 <= snapshot.cpu <= 1.0 and 0.0 < snapshot.memory <= 1.0 and snapshot.load >= 0.0
    assert snapshot.probes == {"db": 0.95}
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "'broken' failed" in logged and "'silly' answered 7.0" in logged


def test_a_saturated_database_pool_lowers_the_probe_factor() -> None:
    """A probe at 0.95 (a pool nearly exhausted) counts like a resource: factor 0.3."""
    snapshot = take_snapshot("w1", 10.0, 0, {"db": lambda: 0.95}, 0.1, 0.1)
    health = cluster_health([snapshot], now=10.0, stale_after=15.0)
    assert health is not None
    assert step_multiplier(max(health.probes.values())) == 0.3


@pytest.mark.parametrize(("pool", "expected"), [(0.5, "normal"), (0.85, "high"), (0.95, "critical")])
def test_a_probe_raises_the_load_severity_like_a_resource(pool: float, expected: str) -> None:
    """A database pool filling up raises the load severity while CPU and memory are idle."""
    snapshot = take_snapshot(
        "w1", 10.0, 0, {"db": lambda: pool}, 0.2, 0.3
    )  # the worker is not the bottleneck
    health = cluster_health([snapshot], now=10.0, stale_after=15.0)
    assert health is not None
    assert health_severity(health).value == expected


def test_severity_thresholds_are_settings_and_can_be_turned_off() -> None:
    """A worker at 85 %: high by default, normal with thresholds of 0.9 / 0.95 or none."""
    snapshot = take_snapshot("w1", 10.0, 0, {}, 0.85, 0.1)
    health = cluster_health([snapshot], now=10.0, stale_after=15.0)
    assert health is not None
    assert health_severity(health).value == "high"
    assert health_severity(health, (0.9, 0.95)).value == "normal"
    assert health_severity(health, None).value == "normal"
    assert step_multiplier(0.99, ()) == 1.0  # resource_thresholds = []: rates left alone


def test_a_thread_pools_reading_counts_only_the_workers_threads() -> None:
    """With the worker's threads named, another thread's CPU in the process is not counted."""
    ready, go, spent, done = (threading.Event() for _ in range(4))
    native: list[int] = []

    def busy() -> None:
        native.append(threading.get_native_id())
        ready.set()
        go.wait(10)
        started = time.thread_time()
        while time.thread_time() - started < 0.3:
            sum(range(10_000))
        spent.set()
        done.wait(10)  # alive while read: an ended thread's seconds leave the listing

    other = threading.Thread(target=busy)
    other.start()
    try:
        assert ready.wait(10)
        # One second between readings on each clock: the share is the seconds counted.
        mine = WorkerUsage(1, iter([0.0, 1.0]).__next__, threads=lambda: {threading.get_native_id()})
        theirs = WorkerUsage(1, iter([0.0, 1.0]).__next__, threads=lambda: set(native))
        assert mine.cpu() is None and theirs.cpu() is None
        go.set()
        assert spent.wait(10)
        assert (mine.cpu() or 0.0) < 0.15  # this thread only waited
        assert (theirs.cpu() or 0.0) >= 0.25  # the other thread's 0.3 s, at the kernel's tick
    finally:
        go.set()
        done.set()
        other.join(10)
