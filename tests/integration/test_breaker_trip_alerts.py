"""A breaker tripped by real calls, read back where users look: Sentry, status, Prometheus."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import sentry_sdk
from prometheus_client import CollectorRegistry, generate_latest

from celery_resilience import FallbackResult, Resilience
from celery_resilience.monitoring.summary import MetricsReader
from celery_resilience.prometheus import register
from tests.http_server import ScriptedServer, sentry_events
from tests.integration.conftest import start_worker, status_report, stop_worker, wait_for

pytestmark = pytest.mark.integration


def status(env: dict[str, str]) -> dict[str, Any]:
    return status_report(env, "tests.integration.tripapp")


@pytest.fixture(scope="module")
def cluster(
    integration_env: dict[str, str],
) -> Iterator[tuple[ModuleType, ScriptedServer, ScriptedServer, dict[str, str]]]:
    """Two workers of the app, a provider answering 500 and a Sentry endpoint, once per
    module: the app reads its queue and prefix when first imported."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _cluster(integration_env, monkeypatch)


def _cluster(
    integration_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, ScriptedServer, ScriptedServer, dict[str, str]]]:
    sentry, provider = ScriptedServer(), ScriptedServer()
    sentry.respond(200, {})
    provider.respond(500, {"error": {"message": "internal error"}})
    run = uuid.uuid4().hex[:8]
    names = {
        "RESILIENCE_TEST_TRIP_PREFIX": f"crtest-trip-{run}",
        "RESILIENCE_TEST_TRIP_QUEUE": f"crtest-trip-{run}",
        "RESILIENCE_TEST_SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry.port}/7",
    }
    for name, value in names.items():
        monkeypatch.setenv(name, value)
    env = {**integration_env, **names}
    from tests.integration import tripapp  # reads this test's queue, prefix and Sentry project

    workers = [
        start_worker(env, "tests.integration.tripapp", names["RESILIENCE_TEST_TRIP_QUEUE"],
                     concurrency=2, extra=["-n", f"trip{i}-{run}@%h"])
        for i in range(2)
    ]  # fmt: skip
    try:
        for _ in workers:
            assert tripapp.ping.delay().get(timeout=60) == "pong"
        yield tripapp, provider, sentry, env
    finally:
        for worker in workers:
            stop_worker(worker)
        Resilience.of(tripapp.app).store.purge()
        # The app started Sentry in this process, reporting to this test's endpoint: what
        # it still holds goes out before the endpoint closes, and nothing after.
        sentry_sdk.get_client().close(timeout=2)
        provider.close()
        sentry.close()


def trip(cluster: Any) -> int:
    """Eight calls against a provider answering 500: the breaker trips, the chain answers
    each (rules for the urgent ones, the template for the rest); the minute they ended in."""
    trip, provider, _, _ = cluster
    prompts = [f"urgent request {i}" if i % 2 else f"request {i}" for i in range(8)]
    answers = [trip.ask.delay(prompt, provider.url) for prompt in prompts]
    results = [answer.get(timeout=60) for answer in answers]
    assert all(isinstance(result, FallbackResult) for result in results)
    assert sorted(result.kind for result in results) == ["rule_based"] * 4 + ["template"] * 4
    assert provider.requests >= 2
    return MetricsReader(Resilience.of(trip.app).store).current_minute()


def test_a_trip_reaches_sentry_at_once_and_shows_in_status(cluster: Any) -> None:
    """A trip by real 500s reaches Sentry once within 5 s and shows in status and the summary."""
    _, _, sentry, env = cluster
    trip(cluster)
    report = status(env)
    breaker = report["breakers"]["provider"]
    assert breaker["state"] == "open" and breaker["trips"] == 1
    tripped_at = breaker["open_until"] - 300  # recovery_timeout, no jitter

    def counted(figure: str, key: str) -> float:
        minutes = (report["this_minute"], report["last_minute"])
        return float(sum(minute[figure].get(key, 0) for minute in minutes))

    assert counted("breaker_trips", "provider") == 1
    assert counted("fallbacks", "rule_based") == 4 and counted("fallbacks", "template") == 4

    # The app started Sentry with its logging integration: the alert's log line is not a
    # second event.
    wait_for(lambda: len(sentry_events(sentry)) >= 1, timeout=10)
    arrived, event = sentry_events(sentry)[0]
    assert arrived - tripped_at < 5.0
    assert event["level"] == "error"
    assert event["fingerprint"] == ["celery-resilience", "breaker_tripped", "provider"]
    assert event["tags"]["resilience.breaker"] == "provider"
    assert "calls refused for" in event["message"]  # sent by the process that tripped it

    # The monitor ticks every 0.3 s and counts the open time: once it has ticked several
    # times with the trip in its counters, still one event.
    wait_for(lambda: counted_open(env) >= 1.5, timeout=30)
    assert len(sentry_events(sentry)) == 1
    assert [alert["rule"] for alert in status(env)["recent_alerts"]] == ["breaker_tripped"]


@pytest.mark.slow  # waits for the minute to end: up to a minute (the scrape on a clock: test_prometheus)
def test_a_trip_shows_in_a_prometheus_scrape_once_its_minute_ends(cluster: Any) -> None:
    """A scrape after the trip's minute ended reports the trip, the fallbacks and the open state."""
    tripapp = cluster[0]
    done_minute = trip(cluster)
    reader = MetricsReader(Resilience.of(tripapp.app).store)
    wait_for(lambda: reader.current_minute() > done_minute, timeout=70)
    summaries = [reader.minute(m) for m in (done_minute - 1, done_minute)]
    assert sum(s.breaker_trips.get("provider", 0) for s in summaries) == 1
    assert sum(s.fallbacks.get("template", 0) for s in summaries) >= 4  # with the test before, 8
    registry = CollectorRegistry()
    register(tripapp.app, registry)
    scraped = generate_latest(registry).decode()
    last = summaries[-1]
    trips = last.breaker_trips.get("provider")
    if trips:
        assert f'resilience_breaker_trips_last_minute{{breaker="provider"}} {trips}' in scraped
    assert last.fallbacks
    for kind, count in last.fallbacks.items():
        assert f'resilience_fallbacks_last_minute{{kind="{kind}"}} {count}' in scraped
    assert 'resilience_breaker_state{breaker="provider",state="open"} 1.0' in scraped


def counted_open(env: dict[str, str]) -> float:
    """Seconds the monitor has counted the breaker open (it adds its interval on each tick)."""
    report = status(env)
    minutes = (report["this_minute"], report["last_minute"])
    return float(sum(minute["breaker_open_seconds"].get("provider", 0) for minute in minutes))
