"""A worker's heartbeat: real host readings, and the user's probes kept only when sane."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from celery_resilience.bootsteps import take_snapshot
from celery_resilience.load import cluster_health, health_severity, step_multiplier


def broken() -> float:
    raise RuntimeError("pool unreachable")


def test_snapshot_reads_the_host_and_the_users_probes(caplog: pytest.LogCaptureFixture) -> None:
    """CPU, memory and load come from psutil; a failing or out-of-range probe is dropped with a warning."""
    probes = {"db": lambda: 0.95, "broken": broken, "silly": lambda: 7.0}
    with caplog.at_level(logging.WARNING, "celery_resilience"):
        snapshot = take_snapshot("w1", at=10.0, active=2, probes=probes)
    assert 0.0 <= snapshot.cpu <= 1.0 and 0.0 < snapshot.memory <= 1.0 and snapshot.load >= 0.0
    assert snapshot.probes == {"db": 0.95}
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "'broken' failed" in logged and "'silly' answered 7.0" in logged


def test_a_saturated_database_pool_lowers_the_probe_factor() -> None:
    """A probe at 0.95 (a pool nearly exhausted) counts like a resource: factor 0.3."""
    snapshot = take_snapshot("w1", at=10.0, active=0, probes={"db": lambda: 0.95})
    health = cluster_health([snapshot], now=10.0, stale_after=15.0)
    assert health is not None
    assert step_multiplier(max(health.probes.values())) == 0.3


@pytest.mark.parametrize(("pool", "expected"), [(0.5, "normal"), (0.85, "high"), (0.95, "critical")])
def test_a_probe_raises_the_load_severity_like_a_resource(pool: float, expected: str) -> None:
    """A database pool filling up makes the load high, then critical, while CPU and memory
    are idle: the throttling strategy hardens with it."""
    snapshot = take_snapshot("w1", at=10.0, active=0, probes={"db": lambda: pool})
    snapshot = dataclasses.replace(snapshot, cpu=0.2, memory=0.3)  # the host is not the bottleneck
    health = cluster_health([snapshot], now=10.0, stale_after=15.0)
    assert health is not None
    assert health_severity(health).value == expected
