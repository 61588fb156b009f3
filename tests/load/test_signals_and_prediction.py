"""Load factors, severity and predicted demand, on their own."""

from __future__ import annotations

import pytest

from celery_resilience.breakers.machine import BreakerState
from celery_resilience.load.prediction import HOURS_PER_WEEK, hour_of_week, predict
from celery_resilience.load.signals import (
    HealthSnapshot,
    LoadFactors,
    QueueThresholds,
    Severity,
    api_multiplier,
    cluster_health,
    queue_multiplier,
    queue_severity,
    step_multiplier,
    usage_severity,
    worst,
)

MONDAY_9 = 9  # hour of week


def snapshot(worker: str, at: float, cpu: float, memory: float = 0.1, **probes: float) -> HealthSnapshot:
    return HealthSnapshot(worker, at, cpu, memory, 0.0, 1, probes)


@pytest.mark.parametrize(("usage", "factor"), [(0.95, 0.3), (0.85, 0.6), (0.75, 0.8), (0.7, 1.0), (0.1, 1.0)])
def test_resource_multiplier_follows_the_reference_table(usage: float, factor: float) -> None:
    """> 0.9 -> 0.3, > 0.8 -> 0.6, > 0.7 -> 0.8, else 1.0."""
    assert step_multiplier(usage) == factor


def test_stale_heartbeats_do_not_count() -> None:
    """A worker silent for longer than stale_after no longer weighs on the cluster's health."""
    snaps = [snapshot("busy", at=0.0, cpu=1.0), snapshot("idle", at=95.0, cpu=0.2, db=0.5)]
    health = cluster_health(snaps, now=100.0, stale_after=15.0)
    assert health is not None and health.workers == 1 and health.usage == pytest.approx(0.2)
    assert cluster_health(snaps, now=200.0, stale_after=15.0) is None


def test_cluster_usage_is_the_mean_and_probes_the_maximum() -> None:
    """Capacity is shared, so CPU and memory are averaged; a shared pool's use is its worst reading."""
    snaps = [snapshot("a", 0, cpu=0.9, db=0.3), snapshot("b", 0, cpu=0.5, memory=0.7, db=0.95)]
    health = cluster_health(snaps, now=1.0, stale_after=15.0)
    assert health is not None
    assert health.usage == pytest.approx((0.9 + 0.7) / 2)
    assert health.probes == {"db": 0.95}


def test_queue_depth_gives_severity_and_multiplier() -> None:
    """Below high: normal; from high: high; from critical: critical. Unknown depth is normal."""
    limits = QueueThresholds(high=100, critical=500)
    assert [queue_severity(d, limits) for d in (0, 99, 100, 499, 500)] == [
        Severity.NORMAL,
        Severity.NORMAL,
        Severity.HIGH,
        Severity.HIGH,
        Severity.CRITICAL,
    ]
    assert queue_severity(None, limits) is Severity.NORMAL
    assert queue_severity(10_000, None) is Severity.NORMAL
    assert [queue_multiplier(s) for s in Severity] == [1.0, 0.6, 0.3]


def test_open_breakers_lower_the_api_factor() -> None:
    """Open -> 0.3, half-open -> 0.6; the worst state wins."""
    assert api_multiplier([]) == 1.0
    assert api_multiplier([BreakerState.CLOSED, BreakerState.HALF_OPEN]) == 0.6
    assert api_multiplier([BreakerState.HALF_OPEN, BreakerState.OPEN]) == 0.3


def test_severity_combines_to_the_worst() -> None:
    """Resource use and queue depth both speak; the louder wins."""
    assert usage_severity(0.85) is Severity.HIGH and usage_severity(0.95) is Severity.CRITICAL
    assert worst(Severity.NORMAL, Severity.CRITICAL, Severity.HIGH) is Severity.CRITICAL


def test_factors_multiply() -> None:
    """Each factor is visible; the admitted rate scales by their product."""
    assert LoadFactors(resources=0.6, queue=0.5).product == pytest.approx(0.3)


def synthetic_weeks(weeks: int, monday_morning: float, base: float = 100.0) -> dict[int, float]:
    """``weeks`` of hourly demand starting on a Monday: flat, except Monday 9:00."""
    start = 4 * 24  # the first Monday 00:00 of the epoch, as an absolute hour
    history = {}
    for hour in range(start, start + weeks * HOURS_PER_WEEK):
        history[hour] = monday_morning if hour_of_week(hour) == MONDAY_9 else base + (hour % 7)
    return history


def test_monday_morning_spike_is_predicted_with_confidence() -> None:
    """Four weeks of a 5x surge at Monday 9:00 predict it for the fifth Monday."""
    history = synthetic_weeks(4, monday_morning=500.0)
    next_monday_9 = 4 * 24 + 4 * HOURS_PER_WEEK + MONDAY_9
    assert hour_of_week(next_monday_9) == MONDAY_9
    prediction = predict(history, next_monday_9)
    assert prediction.spike > 4.5 and prediction.confidence > 0.8
    assert prediction.acts()


def test_a_flat_week_predicts_no_spike() -> None:
    """Without a surge in the history there is nothing to act on."""
    history = synthetic_weeks(4, monday_morning=103.0)
    prediction = predict(history, 4 * 24 + 4 * HOURS_PER_WEEK + MONDAY_9)
    assert prediction.spike < 1.2 and not prediction.acts()


def test_too_little_history_is_not_confident() -> None:
    """One week of a surge is a coincidence, not a pattern."""
    history = synthetic_weeks(1, monday_morning=500.0)
    prediction = predict(history, 4 * 24 + HOURS_PER_WEEK + MONDAY_9)
    assert not prediction.acts()
