"""Alert rules: pure, evaluated by the one elected monitor over the cluster's metrics.

The reference's defaults: more than 100 throttled requests a minute (warning); grace
usage above 0.8 (error); a correlation between throttling and load below 0.3 (info); a
breaker tripped (error); a predicted demand spike (info); the store unreachable (error).
Each alert has a rule and a subject (the breaker, or ``cluster``), which make its
fingerprint and its cool-down: a hundred workers and repeated minutes send one alert.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def evaluate(
    rules: Mapping[str, AlertRule],
    recent: list[MinuteSummary],
    correlation: float | None,
    upcoming: Prediction | None,
    store_down: bool = False,
) -> list[Alert]:
    """The alerts that hold now. ``recent`` are the last minutes (the current one may be partial):
    rates use the busiest of them, events their sum."""
    alerts: list[Alert] = []

    def rule(name: str) -> AlertRule | None:
        found = rules.get(name)
        return found if found is not None and found.enabled else None

    if store_down and (r := rule("store_unreachable")):
        alerts.append(
            Alert(
                r.name,
                "cluster",
                r.level,
                "The resilience store is unreachable: admission and breakers run on each process's own state",
                {"rule": r.name},
            )
        )
        return alerts
    throttled = max((m.throttled for m in recent), default=0.0)
    if (r := rule("throttled_per_minute")) and throttled > r.threshold:
        busiest = max(recent, key=lambda m: m.throttled)
        alerts.append(
            Alert(
                r.name,
                "cluster",
                r.level,
                f"High rate limiting activity: {throttled:g} requests throttled in a minute "
                f"(threshold {r.threshold:g}); consider more capacity or other limits",
                {"rule": r.name},
                {
                    "throttled": throttled,
                    "by_strategy": dict(busiest.throttled_by_strategy),
                    "tiers": dict(busiest.tiers),
                },
            )
        )
    grace = max((m.grace_share for m in recent if m.admitted + m.graced >= 10), default=0.0)
    if (r := rule("grace_usage")) and grace > r.threshold:
        alerts.append(
            Alert(
                r.name,
                "cluster",
                r.level,
                f"Grace allowance exhaustion: {grace:.0%} of admissions needed grace "
                f"(threshold {r.threshold:.0%}); review tier limits",
                {"rule": r.name},
                {"grace_usage": grace},
            )
        )
    if (r := rule("load_correlation")) and correlation is not None and correlation < r.threshold:
        alerts.append(
            Alert(
                r.name,
                "cluster",
                r.level,
                f"Rate limiting does not follow load: correlation {correlation:.2f} "
                f"(threshold {r.threshold:.2f}); review the adaptive limits",
                {"rule": r.name},
                {"correlation": correlation},
            )
        )
    if r := rule("breaker_tripped"):
        trips: dict[str, float] = {}
        for minute in recent:
            for name, count in minute.breaker_trips.items():
                trips[name] = trips.get(name, 0.0) + count
        for name, count in sorted(trips.items()):
            alerts.append(breaker_trip_alert(r, name, f"{count:g} times", {"trips": count}))
    if (r := rule("predicted_spike")) and upcoming is not None and upcoming.acts():
        alerts.append(
            Alert(
                r.name,
                f"hour-{upcoming.hour}",
                r.level,
                f"Demand spike predicted for the next hour: {upcoming.spike:.1f}x the usual "
                f"(confidence {upcoming.confidence:.2f}); limits will shrink by {1 / upcoming.spike:.2f}",
                {"rule": r.name},
                {"spike": upcoming.spike, "confidence": upcoming.confidence},
            )
        )
    return alerts


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
