"""The same metrics for Prometheus (``pip install celery-resilience[prometheus]``).

A collector that reads the cluster-wide metrics from the store at scrape time: the
last completed minute's figures and every breaker's state. Register it in the registry
your workers already expose::

    from celery_resilience.integrations.prometheus import register
    register(app)            # prometheus_client.REGISTRY by default

Every process that registers it reports the same cluster-wide figures; scrape one of
them, or aggregate with ``max``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from ..breaker import BreakerState
from ..extension import Resilience
from ..metrics import MetricsReader

__all__ = ["ResilienceCollector", "register"]

_STATES = [state.value for state in BreakerState]


class ResilienceCollector(Collector):
    def __init__(self, app: Any) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ext = Resilience.of(self.app)
        minute = MetricsReader(ext.store).last(1)[0]
        decisions = GaugeMetricFamily(
            "resilience_admissions_last_minute",
            "Admission decisions in the last completed minute",
            labels=["outcome"],
        )
        for outcome in ("admitted", "graced", "throttled"):
            decisions.add_metric([outcome], getattr(minute, outcome))
        yield decisions
        strategies = GaugeMetricFamily(
            "resilience_throttled_last_minute",
            "Throttled requests by strategy, last minute",
            labels=["strategy"],
        )
        for strategy, count in minute.throttled_by_strategy.items():
            strategies.add_metric([strategy], count)
        yield strategies
        tiers = GaugeMetricFamily(
            "resilience_tier_requests_last_minute", "Decisions per tier", labels=["tier"]
        )
        for tier, count in minute.tiers.items():
            tiers.add_metric([tier], count)
        yield tiers
        yield GaugeMetricFamily(
            "resilience_average_delay_seconds", "Average delay of paced requests", value=minute.average_delay
        )
        yield GaugeMetricFamily(
            "resilience_grace_usage", "Share of admissions that needed grace", value=minute.grace_share
        )
        fallbacks = GaugeMetricFamily(
            "resilience_fallbacks_last_minute", "Fallback answers by kind", labels=["kind"]
        )
        for kind, count in minute.fallbacks.items():
            fallbacks.add_metric([kind], count)
        yield fallbacks
        providers = GaugeMetricFamily(
            "resilience_provider_calls_last_minute", "Calls per provider", labels=["provider"]
        )
        for provider, count in minute.provider_calls.items():
            providers.add_metric([provider], count)
        yield providers
        states = GaugeMetricFamily(
            "resilience_breaker_state", "1 for the state each breaker is in", labels=["breaker", "state"]
        )
        for name in sorted(ext.breakers.policies):
            current = ext.breakers.read(name).state.value
            for state in _STATES:
                states.add_metric([name, state], 1.0 if state == current else 0.0)
        yield states
        yield GaugeMetricFamily(
            "resilience_adaptive_factor",
            "Product of the adaptive multipliers",
            value=ext.load.factors().product,
        )


def register(app: Any, registry: CollectorRegistry = REGISTRY) -> ResilienceCollector:
    collector = ResilienceCollector(app)
    registry.register(collector)
    return collector
