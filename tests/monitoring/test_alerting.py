"""Alert rules and the elected monitor, on both stores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from celery import Celery

from celery_resilience import BreakerState, Resilience, Throttled
from celery_resilience.breakers.machine import effective_state
from celery_resilience.load.prediction import Prediction
from celery_resilience.monitoring.alerting import LEASE, AlertMonitor, AlertSender
from celery_resilience.monitoring.rules import Alert, AlertRule, evaluate
from celery_resilience.monitoring.settings import read_monitoring_settings
from celery_resilience.monitoring.summary import MetricsReader, MinuteSummary
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader


def app_with(store: Store, clock: FakeClock, **conf: Any) -> Resilience:
    app = Celery("alerts", broker="memory://localhost/", set_as_current=False)
    app.conf.update({f"resilience_{k}": v for k, v in conf.items()})
    return Resilience(app, store=store, clock=clock)


def rules_of(**conf: Any) -> Mapping[str, AlertRule]:
    """The alert rules ``resilience_alerts`` makes."""
    return read_monitoring_settings(SettingsReader({"resilience_alerts": conf})).alerts


def sender(resilience: Resilience, send: Callable[[Alert], Any]) -> AlertSender:
    """The app's alert sender, sending to ``send`` instead of Sentry."""
    return AlertSender(resilience.settings.monitoring.alerts, lambda: resilience.store, send)


def monitor(resilience: Resilience, owner: str, send: Callable[[Alert], Any]) -> AlertMonitor:
    """A worker's alert monitor for the app, sending to ``send``."""
    found = resilience.alert_monitor(owner)
    found.sender = sender(resilience, send)
    return found


def test_default_rules_fire_on_the_reference_thresholds() -> None:
    """> 100 throttled a minute, grace usage > 0.8, correlation < 0.3, a trip, a predicted spike."""
    rules = rules_of()
    busy = MinuteSummary(1, throttled=150, admitted=10, graced=50, breaker_trips={"openai": 2})
    spike = Prediction(hour=10, expected=500, spike=5.0, confidence=0.95, weeks=4)
    alerts = {(a.rule, a.subject): a for a in evaluate(rules, [busy], 0.1, spike)}
    assert set(alerts) == {
        ("throttled_per_minute", "cluster"),
        ("grace_usage", "cluster"),
        ("load_correlation", "cluster"),
        ("breaker_tripped", "openai"),
        ("predicted_spike", "hour-10"),
    }
    assert alerts[("throttled_per_minute", "cluster")].level == "warning"
    assert alerts[("breaker_tripped", "openai")].tags == {"rule": "breaker_tripped", "breaker": "openai"}
    calm = MinuteSummary(1, throttled=100, admitted=100, graced=10)
    assert evaluate(rules, [calm], 0.9, None) == []


def test_rules_are_configuration() -> None:
    """Thresholds, levels, cool-downs and switches come from resilience_alerts."""
    rules = rules_of(
        **{"throttled_per_minute": {"threshold": 5, "level": "error"}, "load_correlation": {"enabled": False}}
    )
    alerts = evaluate(rules, [MinuteSummary(1, throttled=6)], 0.0, None)
    assert [(a.rule, a.level) for a in alerts] == [("throttled_per_minute", "error")]


class ProviderDown(Exception):
    """What an HTTP client raises for a 500: the classifier reads ``status_code``."""

    status_code = 500


def refuse(resilience: Resilience, times: int) -> None:
    """Admission refuses ``times`` calls of one user (after the one its bucket allows)."""
    ctx = resilience.admission.context(f"user-{uuid.uuid4().hex}", None, None, None)
    resilience.admission.decide(ctx, task_name="t")
    for _ in range(times):
        with pytest.raises(Throttled):
            resilience.admission.decide(ctx, task_name="t")


def trip(resilience: Resilience, breaker: str) -> None:
    """Failing calls (500s) until the breaker opens."""
    while effective_state(*_state(resilience, breaker)) is not BreakerState.OPEN:
        with pytest.raises(ProviderDown), resilience.guard(breaker):
            raise ProviderDown


def _state(resilience: Resilience, breaker: str) -> tuple[BreakerState, float, float]:
    view = resilience.breakers.read(breaker)
    return view.state, view.open_until, resilience.store.now()


_STRICT = {
    "tiers": {"standard": {"rate": "1/h", "burst": 1}},
    "throttle_strategies": [{"strategy": "reject_with_backoff"}],
}


def test_one_monitor_sends_one_alert_per_rule_and_cool_down(store: Store, clock: FakeClock) -> None:
    """Two workers' monitors: only the lease holder sends, and a cool-down stops repeats."""
    resilience = app_with(
        store, clock, alerts={"throttled_per_minute": {"threshold": 5, "cooldown": 600}}, **_STRICT
    )
    sent: list[Alert] = []
    first, second = monitor(resilience, "w1", sent.append), monitor(resilience, "w2", sent.append)
    refuse(resilience, 9)
    assert [a.rule for a in first.tick()] == ["throttled_per_minute"]
    assert second.tick() == [] and first.tick() == []
    assert store.lease_holder(LEASE) == "w1"
    clock.advance(601)
    refuse(resilience, 9)
    assert [a.rule for a in first.tick()] == ["throttled_per_minute"]
    assert len(sent) == 2 and len(store.recent_alerts()) == 2


def test_the_lease_passes_to_another_monitor_when_its_holder_stops(store: Store, clock: FakeClock) -> None:
    """A dead holder stops renewing; after the lease time another worker's monitor takes over."""
    resilience = app_with(store, clock, alert_interval=10, monitor_lease=30)
    first, second = (
        monitor(resilience, "w1", lambda a: None),
        monitor(resilience, "w2", lambda a: None),
    )
    first.tick()
    clock.advance(20)
    second.tick()
    assert store.lease_holder(LEASE) == "w1"
    clock.advance(11)
    second.tick()
    assert store.lease_holder(LEASE) == "w2"


def test_a_breaker_trip_is_alerted_at_once_and_once(store: Store, clock: FakeClock) -> None:
    """A trip is alerted at once by the call that caused it; neither the monitor nor a re-trip repeats it."""
    immediate: list[Alert] = []
    resilience = app_with(
        store, clock, breakers={"openai": {"minimum_calls": 1, "recovery_timeout": 1, "jitter": 0}}
    )
    resilience.alerts = sender(resilience, immediate.append)
    from_monitor: list[Alert] = []
    watcher = monitor(resilience, "w1", from_monitor.append)
    trip(resilience, "openai")
    assert [(a.rule, a.subject) for a in immediate] == [("breaker_tripped", "openai")]
    assert immediate[0].figures["open_for"] == pytest.approx(1.0)
    watcher.tick()
    clock.advance(1)
    trip(resilience, "openai")
    watcher.tick()
    assert len(immediate) == 1 and from_monitor == []
    assert MetricsReader(store).minute(MetricsReader(store).current_minute()).breaker_trips == {"openai": 2}


def test_the_monitor_alerts_a_trip_its_process_could_not_send(store: Store, clock: FakeClock) -> None:
    """The monitor alerts, from the counters, a trip its process could not send: one per breaker."""
    resilience = app_with(
        store, clock, breakers={"openai": {"minimum_calls": 1}, "anthropic": {"minimum_calls": 1}}
    )
    silent = {
        **resilience.settings.monitoring.alerts,
        "breaker_tripped": AlertRule("breaker_tripped", "error", enabled=False),
    }
    resilience.alerts = AlertSender(silent, lambda: resilience.store, lambda alert: None)
    trip(resilience, "openai")
    trip(resilience, "anthropic")
    sent: list[Alert] = []
    monitor(resilience, "w1", sent.append).tick()
    assert sorted(a.subject for a in sent) == ["anthropic", "openai"]
    assert all("times" in a.message for a in sent)


def test_open_breakers_accumulate_open_time_once_per_tick(store: Store, clock: FakeClock) -> None:
    """The lease holder adds its interval to each open breaker: time spent open, counted once."""
    resilience = app_with(store, clock, alert_interval=10, breakers={"openai": {}, "anthropic": {}})
    resilience.breakers.force("openai", BreakerState.FORCED_OPEN)
    first, second = (
        monitor(resilience, "w1", lambda a: None),
        monitor(resilience, "w2", lambda a: None),
    )
    for _ in range(3):
        first.tick()
        second.tick()
    reader = MetricsReader(store)
    assert reader.minute(reader.current_minute()).breaker_open_seconds == {"openai": 30}
