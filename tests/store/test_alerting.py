"""Alert rules and the elected monitor, on both stores."""

from __future__ import annotations

from typing import Any

from celery import Celery

from celery_resilience import Resilience
from celery_resilience.alerting import LEASE, AlertMonitor
from celery_resilience.alerts import Alert, evaluate, parse_alert_rules
from celery_resilience.metrics import MinuteSummary
from celery_resilience.prediction import Prediction
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock


def app_with(store: Store, clock: FakeClock, **conf: Any) -> Resilience:
    app = Celery("alerts", broker="memory://localhost/", set_as_current=False)
    app.conf.update({f"resilience_{k}": v for k, v in conf.items()})
    return Resilience(app, store=store, clock=clock)


def test_default_rules_fire_on_the_reference_thresholds() -> None:
    """> 100 throttled a minute, grace usage > 0.8, correlation < 0.3, a trip, a predicted spike."""
    rules = parse_alert_rules(None)
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
    rules = parse_alert_rules(
        {"throttled_per_minute": {"threshold": 5, "level": "error"}, "load_correlation": {"enabled": False}}
    )
    alerts = evaluate(rules, [MinuteSummary(1, throttled=6)], 0.0, None)
    assert [(a.rule, a.level) for a in alerts] == [("throttled_per_minute", "error")]


def test_one_monitor_sends_one_alert_per_rule_and_cool_down(store: Store, clock: FakeClock) -> None:
    """Two workers' monitors: only the lease holder sends, and a cool-down stops repeats."""
    resilience = app_with(store, clock, alerts={"throttled_per_minute": {"threshold": 5, "cooldown": 600}})
    sent: list[Alert] = []
    first, second = AlertMonitor(resilience, "w1", sent.append), AlertMonitor(resilience, "w2", sent.append)
    store.count({"throttled@standard": 9})
    assert [a.rule for a in first.tick()] == ["throttled_per_minute"]
    assert second.tick() == [] and first.tick() == []
    assert store.lease_holder(LEASE) == "w1"
    clock.advance(601)
    store.count({"throttled@standard": 9})
    assert [a.rule for a in first.tick()] == ["throttled_per_minute"]
    assert len(sent) == 2 and len(store.recent_alerts()) == 2


def test_the_lease_passes_to_another_monitor_when_its_holder_stops(store: Store, clock: FakeClock) -> None:
    """A dead holder stops renewing; after the lease time another worker's monitor takes over."""
    resilience = app_with(store, clock, alert_interval=10, monitor_lease=30)
    first, second = (
        AlertMonitor(resilience, "w1", lambda a: None),
        AlertMonitor(resilience, "w2", lambda a: None),
    )
    first.tick()
    clock.advance(20)
    second.tick()
    assert store.lease_holder(LEASE) == "w1"
    clock.advance(11)
    second.tick()
    assert store.lease_holder(LEASE) == "w2"


def test_a_breaker_trip_is_alerted_once_per_breaker(store: Store, clock: FakeClock) -> None:
    """Trips counted by any process become one alert per breaker."""
    resilience = app_with(store, clock)
    sent: list[Alert] = []
    monitor = AlertMonitor(resilience, "w1", sent.append)
    store.count({"breaker_trip:openai": 1, "breaker_trip:anthropic": 1})
    monitor.tick()
    store.count({"breaker_trip:openai": 1})
    monitor.tick()
    assert sorted(a.subject for a in sent) == ["anthropic", "openai"]


def test_open_breakers_accumulate_open_time_once_per_tick(store: Store, clock: FakeClock) -> None:
    """The lease holder adds its interval to each open breaker: time spent open, counted once."""
    from celery_resilience import BreakerState
    from celery_resilience.metrics import MetricsReader

    resilience = app_with(store, clock, alert_interval=10, breakers={"openai": {}, "anthropic": {}})
    resilience.breakers.force("openai", BreakerState.FORCED_OPEN)
    first, second = (
        AlertMonitor(resilience, "w1", lambda a: None),
        AlertMonitor(resilience, "w2", lambda a: None),
    )
    for _ in range(3):
        first.tick()
        second.tick()
    reader = MetricsReader(store)
    assert reader.minute(reader.current_minute()).breaker_open_seconds == {"openai": 30}
