"""The load monitor on both stores: heartbeats, staleness, clamping, predicted demand."""

from __future__ import annotations

import pytest

from celery_resilience.admission.gate import Admission
from celery_resilience.errors import Throttled
from celery_resilience.load.monitor import LoadMonitor
from celery_resilience.load.prediction import HOURS_PER_WEEK, hour_index, hour_of_week
from celery_resilience.load.settings import read_load_settings
from celery_resilience.load.signals import HealthSnapshot, Severity
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader
from tests.conftest import Monotonic, SplitClock


def monitor(store: Store, mono: Monotonic, **conf: object) -> LoadMonitor:
    settings = read_load_settings(SettingsReader({f"resilience_{k}": v for k, v in conf.items()}))
    return LoadMonitor(settings, lambda: store, None, lambda name: None, clock=SplitClock(FakeClock(), mono))


def beat(store: Store, worker: str, cpu: float, at: float) -> None:
    store.publish_health(HealthSnapshot(worker, at, cpu, 0.2, 0.1, 3, {}))


def test_a_loaded_cluster_lowers_the_multiplier_and_raises_severity(store: Store, clock: FakeClock) -> None:
    """Two workers at 95 % CPU give factor 0.3 and CRITICAL severity, cached for the interval."""
    mono = Monotonic(0.0)
    load = monitor(store, mono, heartbeat_interval=5, adaptive_interval=1.0, prediction={"enabled": False})
    assert load.factors().resources == 1.0
    beat(store, "w1", 0.95, clock())
    beat(store, "w2", 0.95, clock())
    assert load.factors().resources == 1.0  # still the cached reading
    mono.now += 1.1
    assert load.factors().resources == 0.3
    assert load.severity(None) is Severity.CRITICAL


def test_the_situation_answers_what_severity_and_multiplier_answer(store: Store, clock: FakeClock) -> None:
    """Admission's one call per publish agrees with the two questions, before and after a refresh."""
    mono = Monotonic(0.0)
    load = monitor(store, mono, heartbeat_interval=5, adaptive_interval=1.0, prediction={"enabled": False})
    assert load.situation(None, None) == (Severity.NORMAL, 1.0)
    beat(store, "w1", 0.95, clock())
    assert load.situation(None, None) == (Severity.NORMAL, 1.0)  # still the cached reading
    mono.now += 1.1
    assert load.situation(None, None) == (load.severity(None), load.multiplier()) == (Severity.CRITICAL, 0.3)


def test_a_breakers_state_moves_the_situation_between_refreshes(store: Store, clock: FakeClock) -> None:
    """An answer kept until the next refresh never hides a breaker that opened meanwhile."""
    mono, states = Monotonic(0.0), {"openai": "closed"}
    settings = read_load_settings(SettingsReader({"resilience_prediction": {"enabled": False}}))
    load = LoadMonitor(settings, lambda: store, None, states.get, clock=SplitClock(FakeClock(), mono))
    assert load.situation(None, None) == load.situation(None, "openai") == (Severity.NORMAL, 1.0)
    states["openai"] = "open"
    assert load.situation(None, "openai") == (Severity.NORMAL, 0.3)
    assert load.situation(None, None) == (Severity.NORMAL, 1.0)


def test_a_stale_heartbeat_stops_counting(store: Store, clock: FakeClock) -> None:
    """A worker that stopped reporting 15 s ago (3 heartbeats) no longer weighs on the decision."""
    mono = Monotonic(0.0)
    load = monitor(store, mono, heartbeat_interval=5, prediction={"enabled": False})
    beat(store, "dead", 0.99, clock())
    assert load.factors().resources == 0.3
    clock.advance(16)
    mono.now += 2
    assert load.factors().resources == 1.0
    assert load.health is None


def test_the_clamp_holds_under_load(store: Store, clock: FakeClock) -> None:
    """At 95 % CPU the rate would fall to 0.3 x 60/s, but minimum_guaranteed keeps 30/s."""
    settings = ResilienceSettings.from_conf(
        {
            "resilience_tiers": {"t": {"rate": "60/s", "burst": 1, "minimum_guaranteed": "30/s"}},
            "resilience_throttle_strategies": [{"strategy": "reject_with_backoff"}],
            "resilience_prediction": {"enabled": False},
            "resilience_lease_window": 0,
        }
    )
    load = LoadMonitor(settings.load, lambda: store, None, lambda name: None)
    admission = Admission(settings.admission, lambda: store, load=load)
    beat(store, "w", 0.95, clock())
    ctx = admission.context("u", None, "interactive", None)
    admission.decide(ctx, task_name="t")
    with pytest.raises(Throttled) as caught:
        admission.decide(ctx, task_name="t")
    assert load.factors().resources == 0.3
    assert caught.value.retry_after == pytest.approx(1 / 30)


def test_a_predicted_monday_surge_is_announced_an_hour_ahead_then_shrinks_limits(
    store: Store, clock: FakeClock
) -> None:
    """A Monday surge seen four weeks running is announced an hour ahead, then shrinks limits for its hour."""
    now_hour = hour_index(clock())
    monday_9 = now_hour + (9 - hour_of_week(now_hour)) % HOURS_PER_WEEK
    for hour in range(monday_9 - 4 * HOURS_PER_WEEK, monday_9 - 1):
        store.record_demand(hour, 500.0 if hour_of_week(hour) == 9 else 100.0 + hour % 5)
    clock.advance((monday_9 - 1 - now_hour) * 3600)
    mono = Monotonic(0.0)
    load = monitor(store, mono)
    assert load.factors().predicted == 1.0
    assert load.upcoming is not None and load.upcoming.acts()
    assert [event.hour for event in load.events] == [monday_9]
    clock.advance(3600)
    mono.now += 2
    factors = load.factors()
    assert load.prediction is not None and load.prediction.hour == monday_9
    assert factors.predicted == pytest.approx(1 / load.prediction.spike)
    assert factors.predicted < 0.25
    clock.advance(3600)
    mono.now += 2
    assert load.factors().predicted == 1.0


def test_the_finished_hour_is_added_to_the_history(store: Store, clock: FakeClock) -> None:
    """When the hour turns, the previous hour's requests become one entry of the demand history."""
    mono = Monotonic(0.0)
    load = monitor(store, mono)
    settings = ResilienceSettings.from_conf(
        {
            "resilience_tiers": {"free": {"rate": "1/h", "burst": 7}},
            "resilience_throttle_strategies": [{"strategy": "reject_with_backoff"}],
        }
    )
    admission = Admission(settings.admission, lambda: store)
    ctx = admission.context("u", None, None, None)
    for _ in range(7):
        admission.decide(ctx, task_name="t")
    for _ in range(3):
        with pytest.raises(Throttled):
            admission.decide(ctx, task_name="t")
    previous = hour_index(clock())
    clock.advance(3600)
    load.factors()
    assert store.demand_history()[previous] == 10
