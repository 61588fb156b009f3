"""The Prometheus collector exposes the cluster-wide metrics, read at scrape time."""

from __future__ import annotations

import pytest
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest

from celery_resilience import BreakerState, Resilience, ResilientTask
from celery_resilience.prometheus import register
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock


class ProviderDown(Exception):
    status_code = 500


def test_scrape_shows_last_minute_figures_and_breaker_states(store: Store, clock: FakeClock) -> None:
    """A scrape shows the last minute's figures and one-hot breaker states, half-open once due."""
    app = Celery("prom", broker="memory://localhost/", set_as_current=False)
    app.conf.update(
        resilience_tiers={"free": {"rate": "1/h", "burst": 5}},
        resilience_throttle_strategies=[{"strategy": "delay", "seconds": 1}],
        resilience_max_throttle_delay=7200,
        resilience_breakers={
            "openai": {"minimum_calls": 1, "recovery_timeout": 300, "jitter": 0},
            "other": {},
        },
        resilience_templates={"p.ask": "later"},
    )
    resilience = Resilience(app, store=store, clock=clock)

    @app.task(base=ResilientTask, name="p.ask", fallbacks=["template"], shared=False)
    def ask(prompt: str) -> str:
        return prompt

    for _ in range(7):
        ask.apply_async(("hi",), user_id="u")
    for _ in range(2):
        with pytest.raises(ProviderDown), resilience.guard("openai"):
            raise ProviderDown
    resilience.fallbacks.run("p.ask", ["hi"], {}, "down", "server_error", None)
    resilience.breakers.force("other", BreakerState.FORCED_OPEN)
    clock.advance(60)
    registry = CollectorRegistry()
    register(app, registry)
    text = generate_latest(registry).decode()
    assert 'resilience_admissions_last_minute{outcome="admitted"} 5.0' in text
    assert 'resilience_throttled_last_minute{strategy="delay"} 2.0' in text
    assert 'resilience_fallbacks_last_minute{kind="template"} 1.0' in text
    assert 'resilience_breaker_trips_last_minute{breaker="openai"} 1.0' in text
    assert 'resilience_breaker_state{breaker="other",state="forced_open"} 1.0' in text
    assert 'resilience_breaker_state{breaker="openai",state="open"} 1.0' in text
    clock.advance(300)
    text = generate_latest(registry).decode()
    assert 'resilience_breaker_state{breaker="openai",state="half_open"} 1.0' in text
    assert 'resilience_breaker_state{breaker="openai",state="open"} 0.0' in text
