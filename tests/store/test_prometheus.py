"""The Prometheus collector exposes the cluster-wide metrics, read at scrape time."""

from __future__ import annotations

from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest

from celery_resilience import BreakerState, Resilience
from celery_resilience.integrations.prometheus import register
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock


def test_scrape_shows_last_minute_figures_and_breaker_states(store: Store, clock: FakeClock) -> None:
    """What was counted in the last completed minute, and a one-hot breaker state."""
    app = Celery("prom", broker="memory://localhost/", set_as_current=False)
    app.conf.resilience_breakers = {"openai": {}}
    resilience = Resilience(app, store=store, clock=clock)
    store.count({"admitted@free": 5, "throttled@free": 2, "throttled:delay": 2, "fallback:template": 1})
    resilience.breakers.force("openai", BreakerState.FORCED_OPEN)
    clock.advance(60)
    registry = CollectorRegistry()
    register(app, registry)
    text = generate_latest(registry).decode()
    assert 'resilience_admissions_last_minute{outcome="admitted"} 5.0' in text
    assert 'resilience_throttled_last_minute{strategy="delay"} 2.0' in text
    assert 'resilience_fallbacks_last_minute{kind="template"} 1.0' in text
    assert 'resilience_breaker_state{breaker="openai",state="forced_open"} 1.0' in text
    assert 'resilience_breaker_state{breaker="openai",state="closed"} 0.0' in text
