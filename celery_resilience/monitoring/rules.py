"""Alert rules: pure, evaluated by the one elected monitor over the cluster's metrics.

The reference's defaults: more than 100 throttled requests a minute (warning); grace
usage above 0.8 (error); a correlation between throttling and load below 0.3 (info); a
breaker tripped (error); a predicted demand spike (info); the store unreachable (error).
Each alert has a rule and a subject (the breaker, or ``cluster``), which make its
fingerprint and its cool-down: a hundred workers and repeated minutes send one alert.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..load.prediction import Prediction
from .summary import MinuteSummary

__all__ = [
    "AlertRule",
    "Alert",
    "DEFAULT_RULES",
    "evaluate",
    "breaker_trip_alert",
    "LEVELS",
]

LEVELS = ("debug", "info", "warning", "error", "fatal")


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    level: str
    threshold: float = 0.0
    cooldown: float = 600.0
    enabled: bool = True


@dataclass(frozen=True)
class Alert:
    rule: str
    subject: str
    level: str
    message: str
    tags: Mapping[str, str] = field(default_factory=dict)
    figures: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> list[str]:
        return ["celery-resilience", self.rule, self.subject]


DEFAULT_RULES: Mapping[str, AlertRule] = {
    "throttled_per_minute": AlertRule("throttled_per_minute", "warning", 100),
    "grace_usage": AlertRule("grace_usage", "error", 0.8),
    "load_correlation": AlertRule("load_correlation", "info", 0.3),
    "breaker_tripped": AlertRule("breaker_tripped", "error"),
    "predicted_spike": AlertRule("predicted_spike", "info"),
    "store_unreachable": AlertRule("store_unreachable", "error"),
}


@dataclass(frozen=True)
class Signals:
    """What the rules look at: the last minutes (the current one may be partial), the
    correlation between throttling and load, the next hour's predicted demand."""

    recent: list[MinuteSummary]
    correlation: float | None
    upcoming: Prediction | None


def evaluate(
    rules: Mapping[str, AlertRule],
    recent: list[MinuteSummary],
    correlation: float | None,
    upcoming: Prediction | None,
    store_down: bool = False,
) -> list[Alert]:
    """The alerts that hold now: rates use the busiest of the ``recent`` minutes, events their sum.
    With the store down, only that is said (nothing else can be read)."""
    if store_down:
        checks: tuple[tuple[str, _Check], ...] = (("store_unreachable", _store_unreachable),)
    else:
        checks = _CHECKS
    signals = Signals(recent, correlation, upcoming)
    alerts: list[Alert] = []
    for name, check in checks:
        rule = rules.get(name)
        if rule is not None and rule.enabled:
            alerts.extend(check(rule, signals))
    return alerts


def _store_unreachable(rule: AlertRule, signals: Signals) -> list[Alert]:
    message = "The resilience store is unreachable: admission and breakers run on each process's own state"
    return [Alert(rule.name, "cluster", rule.level, message, {"rule": rule.name})]


def _throttled(rule: AlertRule, signals: Signals) -> list[Alert]:
    busiest = max(signals.recent, key=lambda m: m.throttled, default=None)
    if busiest is None or busiest.throttled <= rule.threshold:
        return []
    message = (
        f"High rate limiting activity: {busiest.throttled:g} requests throttled in a minute "
        f"(threshold {rule.threshold:g}); consider more capacity or other limits"
    )
    figures = {
        "throttled": busiest.throttled,
        "by_strategy": dict(busiest.throttled_by_strategy),
        "tiers": dict(busiest.tiers),
    }
    return [Alert(rule.name, "cluster", rule.level, message, {"rule": rule.name}, figures)]


def _grace(rule: AlertRule, signals: Signals) -> list[Alert]:
    grace = max((m.grace_share for m in signals.recent if m.admitted + m.graced >= 10), default=0.0)
    if grace <= rule.threshold:
        return []
    message = (
        f"Grace allowance exhaustion: {grace:.0%} of admissions needed grace "
        f"(threshold {rule.threshold:.0%}); review tier limits"
    )
    return [Alert(rule.name, "cluster", rule.level, message, {"rule": rule.name}, {"grace_usage": grace})]


def _correlation(rule: AlertRule, signals: Signals) -> list[Alert]:
    correlation = signals.correlation
    if correlation is None or correlation >= rule.threshold:
        return []
    message = (
        f"Rate limiting does not follow load: correlation {correlation:.2f} "
        f"(threshold {rule.threshold:.2f}); review the adaptive limits"
    )
    return [
        Alert(rule.name, "cluster", rule.level, message, {"rule": rule.name}, {"correlation": correlation})
    ]


def _trips(rule: AlertRule, signals: Signals) -> list[Alert]:
    trips: dict[str, float] = {}
    for minute in signals.recent:
        for name, count in minute.breaker_trips.items():
            trips[name] = trips.get(name, 0.0) + count
    return [
        breaker_trip_alert(rule, name, f"{count:g} times", {"trips": count})
        for name, count in sorted(trips.items())
    ]


def _spike(rule: AlertRule, signals: Signals) -> list[Alert]:
    upcoming = signals.upcoming
    if upcoming is None or not upcoming.acts():
        return []
    message = (
        f"Demand spike predicted for the next hour: {upcoming.spike:.1f}x the usual "
        f"(confidence {upcoming.confidence:.2f}); limits will shrink by {1 / upcoming.spike:.2f}"
    )
    figures = {"spike": upcoming.spike, "confidence": upcoming.confidence}
    return [Alert(rule.name, f"hour-{upcoming.hour}", rule.level, message, {"rule": rule.name}, figures)]


_Check = Callable[[AlertRule, Signals], list[Alert]]
# The rules in the order their alerts are reported.
_CHECKS: tuple[tuple[str, _Check], ...] = (
    ("throttled_per_minute", _throttled),
    ("grace_usage", _grace),
    ("load_correlation", _correlation),
    ("breaker_tripped", _trips),
    ("predicted_spike", _spike),
)


def breaker_trip_alert(rule: AlertRule, breaker: str, how: str, figures: Mapping[str, Any]) -> Alert:
    """The alert for a breaker that tripped: sent at once by the process whose outcome tripped
    it, and by the monitor from the trip counters (the shared cool-down lets one through)."""
    return Alert(
        rule.name,
        breaker,
        rule.level,
        f"Circuit breaker {breaker!r} tripped ({how})",
        {"rule": rule.name, "breaker": breaker},
        figures,
    )
