"""Cluster-wide metrics read back from the store, on both stores: every figure comes from the
code that does the thing (a publish, a failing call, a fallback answer, a heartbeat)."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_resilience import BreakerState, Resilience, ResilientTask, Throttled
from celery_resilience.load.monitor import LoadMonitor
from celery_resilience.load.signals import HealthSnapshot
from celery_resilience.monitoring.summary import MetricsReader, pearson
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock
from tests.conftest import Monotonic, SplitClock


class ProviderDown(Exception):
    """What an HTTP client raises for a 500: the classifier reads ``status_code``."""

    status_code = 500


def app_with(store: Store, clock: FakeClock, **conf: Any) -> tuple[Celery, Resilience]:
    app = Celery("metrics", broker="memory://localhost/", set_as_current=False)
    app.conf.update({f"resilience_{k}": v for k, v in conf.items()})
    return app, Resilience(app, store=store, clock=clock)


def publish(task: Any, times: int, **options: Any) -> int:
    """Publish ``times`` calls; returns how many were refused."""
    refused = 0
    for _ in range(times):
        try:
            task.apply_async(("hi",), **options)
        except Throttled:
            refused += 1
    return refused


def test_pearson_matches_a_hand_computation() -> None:
    """Pearson's r matches a hand computation (6 / sqrt(60) for the series below)."""
    assert pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]) == pytest.approx(6 / (10 * 6) ** 0.5)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([1, 2], [1, 2]) is None


def test_the_minute_summary_names_what_happened(store: Store, clock: FakeClock) -> None:
    """The minute summary counts what real publishes, failing calls and fallback answers did."""
    app, resilience = app_with(
        store,
        clock,
        tiers={"free": {"rate": "1/h", "burst": 2, "grace": 1}, "pro": {"rate": "1/s", "burst": 1}},
        default_tier="free",
        throttle_strategies=[
            {"tier": "pro", "strategy": "delay", "seconds": 1},
            {"strategy": "reject_with_backoff", "seconds": 30},
        ],
        lease_window=0,
        breakers={"openai": {"minimum_calls": 1, "failure_threshold": 5}},
        providers={"openai": {"rate": "100/m"}},
        templates={"m.ask": "no answer to {prompt}"},
    )

    @app.task(base=ResilientTask, name="m.ask", fallbacks=["template"], shared=False)
    def ask(prompt: str) -> str:
        return prompt

    assert publish(ask, 4, user_id="u1") == 1  # 2 admitted, 1 on grace, 1 refused
    assert publish(ask, 3, user_id="u2", tier="pro") == 0  # 1 admitted, 2 delayed at 1 s and 2 s
    for _ in range(2):  # 2 x 2.5 reaches the threshold of 5
        with pytest.raises(ProviderDown), resilience.guard("openai"):
            raise ProviderDown
    resilience.breakers.force("openai", BreakerState.CLOSED)
    for prompt in ("a", "b"):
        resilience.fallbacks.run("m.ask", [prompt], {}, "the provider is down", "server_error", None)
    resilience.quota.take("openai")
    resilience.quota.drain("openai", 1.0)
    app.send_task("m.ask", ("sent by name",))

    reader = MetricsReader(store)
    summary = reader.minute(reader.current_minute())
    assert (summary.requests, summary.admitted, summary.graced, summary.throttled) == (7, 3, 1, 3)
    assert summary.throttled_by_strategy == {"delay": 2, "reject_with_backoff": 1}
    assert summary.average_delay == pytest.approx(1.5)  # waits of 1 s and 2 s
    assert summary.tiers == {"free": 4, "pro": 3}
    assert summary.grace_share == pytest.approx(0.25)
    assert summary.breaker_trips == {"openai": 1}
    assert summary.breakers_forced == {"openai": 1}
    assert summary.fallbacks == {"template": 2}
    assert summary.provider_calls == {"openai": 1} and summary.provider_429s == {"openai": 1}
    assert summary.ungated == 1


def test_a_breaker_that_closes_after_its_probe_is_counted_as_closed(store: Store, clock: FakeClock) -> None:
    """Trip, wait out the recovery time, probe successfully: one trip and one close."""
    _, resilience = app_with(
        store, clock, breakers={"openai": {"minimum_calls": 1, "recovery_timeout": 10, "jitter": 0}}
    )
    for _ in range(2):
        with pytest.raises(ProviderDown), resilience.guard("openai"):
            raise ProviderDown
    clock.advance(10)
    with resilience.guard("openai"):
        pass
    reader = MetricsReader(store)
    summary = reader.minute(reader.current_minute())
    assert summary.breaker_trips == {"openai": 1} and summary.breaker_closes == {"openai": 1}


def test_load_correlation_follows_throttling_and_the_workers_heartbeats(
    store: Store, clock: FakeClock
) -> None:
    """The load correlation is Pearson's r of refusals against the workers' reported CPU per minute."""
    _, resilience = app_with(
        store,
        clock,
        tiers={"t": {"rate": "1/h", "burst": 1}},
        throttle_strategies=[{"strategy": "reject_with_backoff"}],
        prediction={"enabled": False},
    )
    admission, reader = resilience.admission, MetricsReader(store)
    mono = Monotonic(0.0)
    load = LoadMonitor(
        resilience.settings.load, lambda: store, None, lambda name: None, clock=SplitClock(clock, mono)
    )
    throttled, usages = [1, 2, 3, 4, 5], [0.2, 0.4, 0.5, 0.4, 0.5]
    for minute, (refusals, usage) in enumerate(zip(throttled, usages, strict=True)):
        ctx = admission.context(f"user-{minute}", None, None, None)
        admission.decide(ctx, task_name="t")  # the one token
        for _ in range(refusals):
            with pytest.raises(Throttled):
                admission.decide(ctx, task_name="t")
        store.publish_health(HealthSnapshot("worker", clock(), usage, 0.1, 0.1, 1))
        mono.now += 60
        load.severity(None)  # a refresh: it records the minute's use
        clock.advance(60)
    assert reader.load_correlation(minutes=5) == pytest.approx(6 / (10 * 6) ** 0.5)
    assert [s.throttled for s in reader.last(5)] == throttled
