"""Cluster-wide metrics, read back from the store's per-minute counters.

Every process counts into the same per-minute hashes (admission in its own script,
fallbacks, breaker transitions, expiries, ungated publishes); the load monitor records
the cluster's resource use once per minute. This module reads them as one summary per
minute, for the status command, the alerts and Prometheus.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .counters import (
    ADMITTED,
    ANSWERED,
    BREAKER_CLOSE,
    BREAKER_FORCED,
    BREAKER_OPEN_SECONDS,
    BREAKER_TRIP,
    CACHE_CHECKED,
    CACHE_DISAGREED,
    DELAY_TOTAL,
    DEQUEUED,
    EXPIRED,
    FALLBACK,
    FALLBACK_EXHAUSTED,
    GRACED,
    HANDLED,
    PROVIDER_429,
    PROVIDER_SCOPE,
    PROVIDER_UNSETTLED,
    PROVIDER_UNSETTLED_STREAM,
    PUBLISH_FAILED,
    REJECTED,
    RELEASED_EARLY,
    REQUESTS,
    RETRY_REFUSED,
    SHED,
    SOJOURN_TOTAL,
    STORE_UNAVAILABLE,
    THROTTLED,
    THROTTLED_BY,
    TIER,
    UNGATED,
    outcome_field,
)
from .port import SECONDS_PER_MINUTE, MonitoringStore

__all__ = ["MinuteSummary", "MetricsReader", "pearson", "summarise"]


@dataclass(frozen=True)
class MinuteSummary:
    minute: int
    requests: float = 0.0
    admitted: float = 0.0
    graced: float = 0.0
    throttled: float = 0.0
    throttled_by_strategy: Mapping[str, float] = field(default_factory=dict)
    delay_total: float = 0.0
    average_delay: float = 0.0
    tiers: Mapping[str, float] = field(default_factory=dict)
    fallbacks: Mapping[str, float] = field(default_factory=dict)
    fallback_exhausted: float = 0.0
    breaker_trips: Mapping[str, float] = field(default_factory=dict)
    breaker_closes: Mapping[str, float] = field(default_factory=dict)
    breakers_forced: Mapping[str, float] = field(default_factory=dict)
    breaker_open_seconds: Mapping[str, float] = field(default_factory=dict)
    provider_calls: Mapping[str, float] = field(default_factory=dict)
    provider_429s: Mapping[str, float] = field(default_factory=dict)
    provider_unsettled: Mapping[str, float] = field(default_factory=dict)
    provider_unsettled_streams: Mapping[str, float] = field(default_factory=dict)
    dequeued: Mapping[str, float] = field(default_factory=dict)
    sojourn_total: Mapping[str, float] = field(default_factory=dict)
    sheds: Mapping[str, float] = field(default_factory=dict)
    # Per fair queue: held tasks a worker ran before their hold ended (load/release.py).
    released_early: Mapping[str, float] = field(default_factory=dict)
    retries_refused: Mapping[str, float] = field(default_factory=dict)
    # "<dependency>/<category>": failures handled (retried, fallen back), not errors.
    handled: Mapping[str, float] = field(default_factory=dict)
    # Per task: the provider's answers compared with the cache's, and those that differed.
    cache_checks: Mapping[str, float] = field(default_factory=dict)
    cache_disagreements: Mapping[str, float] = field(default_factory=dict)
    expired: float = 0.0
    ungated: float = 0.0
    store_unavailable: float = 0.0
    publish_failed: float = 0.0

    @property
    def grace_share(self) -> float:
        """Grace usage: the share of admissions that needed the grace allowance."""
        admitted = self.admitted + self.graced
        return self.graced / admitted if admitted else 0.0

    @property
    def average_sojourn(self) -> dict[str, float]:
        """Per queue, the seconds the tasks an ``AITask`` dequeued had waited, on average."""
        return {queue: self.sojourn_total.get(queue, 0.0) / n for queue, n in self.dequeued.items() if n}


def _prefixed(fields: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {name[len(prefix) :]: value for name, value in fields.items() if name.startswith(prefix)}


def summarise(minute: int, fields: Mapping[str, float], provider: Mapping[str, float]) -> MinuteSummary:
    """One minute's counters (already derived) as named figures."""
    admitted, graced = fields.get(ADMITTED, 0.0), fields.get(GRACED, 0.0)
    paced = sum(v for k, v in _prefixed(fields, THROTTLED_BY).items() if k not in (REJECTED, ANSWERED))
    delay_total = fields.get(DELAY_TOTAL, 0.0)
    calls = outcome_field(ADMITTED, "")
    return MinuteSummary(
        minute=minute,
        requests=fields.get(REQUESTS, 0.0),
        admitted=admitted,
        graced=graced,
        throttled=fields.get(THROTTLED, 0.0),
        throttled_by_strategy=_prefixed(fields, THROTTLED_BY),
        delay_total=delay_total,
        average_delay=delay_total / paced if paced else 0.0,
        tiers=_prefixed(fields, TIER),
        fallbacks=_prefixed(fields, FALLBACK),
        fallback_exhausted=fields.get(FALLBACK_EXHAUSTED, 0.0),
        breaker_trips=_prefixed(fields, BREAKER_TRIP),
        breaker_closes=_prefixed(fields, BREAKER_CLOSE),
        breakers_forced=_prefixed(fields, BREAKER_FORCED),
        breaker_open_seconds=_prefixed(fields, BREAKER_OPEN_SECONDS),
        provider_calls=_prefixed(provider, calls),
        provider_429s=_prefixed(fields, PROVIDER_429),
        provider_unsettled=_prefixed(fields, PROVIDER_UNSETTLED),
        provider_unsettled_streams=_prefixed(fields, PROVIDER_UNSETTLED_STREAM),
        dequeued=_prefixed(fields, DEQUEUED),
        sojourn_total=_prefixed(fields, SOJOURN_TOTAL),
        sheds=_prefixed(fields, SHED),
        released_early=_prefixed(fields, RELEASED_EARLY),
        retries_refused=_prefixed(fields, RETRY_REFUSED),
        handled=_prefixed(fields, HANDLED),
        cache_checks=_prefixed(fields, CACHE_CHECKED),
        cache_disagreements=_prefixed(fields, CACHE_DISAGREED),
        expired=fields.get(EXPIRED, 0.0),
        ungated=fields.get(UNGATED, 0.0),
        store_unavailable=fields.get(STORE_UNAVAILABLE, 0.0),
        publish_failed=fields.get(PUBLISH_FAILED, 0.0),
    )


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's correlation of two equally long series; None when either does not vary."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    dx = [x - mean_x for x in xs]
    dy = [y - mean_y for y in ys]
    spread = math.sqrt(sum(d * d for d in dx) * sum(d * d for d in dy))
    return sum(a * b for a, b in zip(dx, dy, strict=True)) / spread if spread else None


class MetricsReader:
    def __init__(self, store: MonitoringStore) -> None:
        self.store = store

    def current_minute(self) -> int:
        return int(self.store.now() // SECONDS_PER_MINUTE)

    def minute(self, minute: int) -> MinuteSummary:
        return summarise(minute, self.store.metrics(minute), self.store.metrics(minute, scope=PROVIDER_SCOPE))

    def last(self, minutes: int = 10, *, include_current: bool = False) -> list[MinuteSummary]:
        """The last ``minutes`` minutes, oldest first (completed minutes unless told otherwise)."""
        end = self.current_minute() + (1 if include_current else 0)
        return [self.minute(m) for m in range(end - minutes, end)]

    def load_correlation(self, minutes: int = 30) -> float | None:
        """Correlation between throttled requests and the cluster's resource use, per minute,
        over the completed minutes for which both are known. Admission that follows load
        correlates well; a low figure means limits ignore the system's state."""
        end = self.current_minute()
        span = list(range(end - minutes, end))
        load = self.store.load_series(span)
        known = [m for m in span if m in load]
        throttled = [self.store.metrics(m).get(THROTTLED, 0.0) for m in known]
        return pearson(throttled, [load[m] for m in known])
