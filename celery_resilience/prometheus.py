"""The same metrics for Prometheus (``pip install celery-resilience[prometheus]``).

A collector that reads the cluster-wide metrics from the store at scrape time: the
last completed minute's figures and every breaker's state. Register it in the registry
your workers already expose::

    from celery_resilience.prometheus import register
    register(app)            # prometheus_client.REGISTRY by default

Every process that registers it reports the same cluster-wide figures; scrape one of
them, or aggregate with ``max``. When the store does not answer, a scrape still
succeeds with ``resilience_store_up 0`` and nothing else, so the outage can be alerted
on. ``ops/prometheus-rules.yml`` and ``ops/grafana-dashboard.json`` use these names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from .breakers.machine import BreakerState, effective_state
from .errors import StoreUnavailable
from .extension import Resilience
from .monitoring.summary import MetricsReader

__all__ = ["ResilienceCollector", "register"]

_STATES = [state.value for state in BreakerState]


class ResilienceCollector(Collector):
    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ext = Resilience.of(self.app)
        try:
            families = list(self._families(ext))
        except StoreUnavailable:
            families = []
        yield GaugeMetricFamily(
            "resilience_store_up",
            "1 when the resilience store answered this scrape",
            value=1.0 if families else 0.0,
        )
        yield from families

    def _families(self, ext: Resilience) -> Iterator[GaugeMetricFamily]:
        minute = MetricsReader(ext.store).last(1)[0]
        decisions = {outcome: getattr(minute, outcome) for outcome in ("admitted", "graced", "throttled")}
        yield _labelled(
            "admissions_last_minute", "Admission decisions in the last completed minute", "outcome", decisions
        )
        yield _labelled(
            "throttled_last_minute",
            "Throttled requests by strategy, last minute",
            "strategy",
            minute.throttled_by_strategy,
        )
        yield _labelled("tier_requests_last_minute", "Decisions per tier, last minute", "tier", minute.tiers)
        yield _labelled(
            "fallbacks_last_minute", "Fallback answers by kind, last minute", "kind", minute.fallbacks
        )
        yield _labelled(
            "breaker_trips_last_minute", "Breaker trips, last minute", "breaker", minute.breaker_trips
        )
        yield _labelled(
            "breaker_closes_last_minute",
            "Breakers closed again, last minute",
            "breaker",
            minute.breaker_closes,
        )
        yield _labelled(
            "provider_calls_last_minute", "Calls per provider, last minute", "provider", minute.provider_calls
        )
        yield GaugeMetricFamily(
            "resilience_average_delay_seconds", "Average delay of paced requests", value=minute.average_delay
        )
        yield GaugeMetricFamily(
            "resilience_grace_usage", "Share of admissions that needed grace", value=minute.grace_share
        )
        states = GaugeMetricFamily(
            "resilience_breaker_state", "1 for the state each breaker is in", labels=["breaker", "state"]
        )
        now = ext.store.now()
        for name in sorted(ext.breakers.policies):
            view = ext.breakers.read(name)
            current = effective_state(view.state, view.open_until, now).value
            for state in _STATES:
                states.add_metric([name, state], 1.0 if state == current else 0.0)
        yield states
        yield GaugeMetricFamily(
            "resilience_adaptive_factor",
            "Product of the adaptive multipliers",
            value=ext.load.factors().product,
        )


def _labelled(name: str, documentation: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"resilience_{name}", documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def register(app: Any, registry: CollectorRegistry = REGISTRY) -> ResilienceCollector:
    collector = ResilienceCollector(app)
    registry.register(collector)
    return collector
