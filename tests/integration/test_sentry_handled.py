"""What reaches Sentry from real workers whose app starts Sentry with its default
integrations: what someone must act on, and nothing the plugin handled."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import sentry_sdk
from celery_resilience_harness.simulation.token_provider import TokenLimits, TokenProvider

from celery_resilience import FallbackResult, Resilience
from celery_resilience.cli import status_report
from tests.http_server import ScriptedServer, sentry_events
from tests.integration.conftest import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.integration

WARNING_QUEUE_SUFFIX = "-warning"


@pytest.fixture(scope="module")
def cluster(integration_env: dict[str, str]) -> Iterator[tuple[ModuleType, ScriptedServer, str]]:
    """Two workers of one thread each: one drops handled errors (the default), one marks
    them as warnings; both report to one local Sentry endpoint."""
    sentry = ScriptedServer()
    sentry.respond(200, {})
    run = uuid.uuid4().hex[:8]
    names = {
        "RESILIENCE_TEST_SENTRY_PREFIX": f"crtest-sentry-{run}",
        "RESILIENCE_TEST_SENTRY_QUEUE": f"crtest-sentry-{run}",
        "RESILIENCE_TEST_SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry.port}/9",
    }
    patch = pytest.MonkeyPatch()
    for name, value in names.items():
        patch.setenv(name, value)
    env = {**integration_env, **names}
    from tests.integration import sentryapp

    queue = names["RESILIENCE_TEST_SENTRY_QUEUE"]
    warning = {**env, "RESILIENCE_TEST_SENTRY_HANDLED": "warning"}
    workers = [
        start_worker(env, "tests.integration.sentryapp", queue, extra=["-n", f"drop-{run}@%h"]),
        start_worker(warning, "tests.integration.sentryapp", queue + WARNING_QUEUE_SUFFIX,
                     extra=["-n", f"warn-{run}@%h"]),
    ]  # fmt: skip
    try:
        assert sentryapp.ping.delay().get(timeout=60) == "pong"
        assert sentryapp.ping.apply_async(queue=queue + WARNING_QUEUE_SUFFIX).get(timeout=60) == "pong"
        yield sentryapp, sentry, queue
    finally:
        for worker in workers:
            stop_worker(worker)
        Resilience.of(sentryapp.app).store.purge()
        sentry_sdk.get_client().close(timeout=2)
        patch.undo()
        sentry.close()


@pytest.fixture
def app(cluster: tuple[ModuleType, ScriptedServer, str]) -> Iterator[tuple[ModuleType, ScriptedServer, str]]:
    cluster[1].received.clear()
    yield cluster


def settled(sentry: ScriptedServer, seconds: float = 1.5) -> list[dict[str, Any]]:
    """The events once the endpoint has heard nothing new for a while (the SDK sends from
    a thread of its own, so an event may trail its task's result)."""
    last = -1
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        count = len(sentry.received)
        if count == last:
            break
        last = count
        time.sleep(seconds)
    return [event for _, event in sentry_events(sentry)]


def exceptions(event: dict[str, Any]) -> list[str]:
    return [value.get("type", "") for value in (event.get("exception") or {}).get("values") or []]


def test_429s_the_budget_paces_send_no_event(app: tuple[ModuleType, ScriptedServer, str]) -> None:
    """Six calls, a provider taking two per 3 s without saying so: 429s, retried, answered; no event."""
    sentryapp, sentry, _ = app
    provider = TokenProvider(
        TokenLimits(requests=2), window=3, headers=False, output_median=20, output_p99=20
    )
    try:
        results = [sentryapp.paced.delay(f"question {i}", provider.url) for i in range(6)]
        answers = [result.get(timeout=120) for result in results]
    finally:
        provider.close()
    assert all(isinstance(answer, str) for answer in answers)
    assert provider.statuses.count(429) >= 1
    assert settled(sentry) == []
    report = status_report(sentryapp.app)
    counted = sum(report[m]["handled"].get("paced/rate_limit", 0) for m in ("this_minute", "last_minute"))
    assert counted == provider.statuses.count(429)


def test_a_chain_that_answers_sends_no_event(app: tuple[ModuleType, ScriptedServer, str]) -> None:
    """A provider answering 500: each request is answered by its template, and Sentry hears nothing."""
    sentryapp, sentry, _ = app
    provider = TokenProvider(TokenLimits(requests=1000), window=60)
    provider.outage = 500
    try:
        answers = [sentryapp.answered.delay(f"question {i}", provider.url).get(timeout=60) for i in range(3)]
    finally:
        provider.close()
    assert all(isinstance(answer, FallbackResult) and answer.kind == "template" for answer in answers)
    assert settled(sentry) == []


def test_a_trip_is_the_one_event(app: tuple[ModuleType, ScriptedServer, str]) -> None:
    """A provider failing until the breaker trips, the chain answering: the trip alert and nothing else."""
    sentryapp, sentry, _ = app
    provider = TokenProvider(TokenLimits(requests=1000), window=60)
    provider.outage = 500
    try:
        answers = [sentryapp.trips.delay(f"question {i}", provider.url).get(timeout=60) for i in range(6)]
    finally:
        provider.close()
    assert all(isinstance(answer, FallbackResult) for answer in answers)
    wait_for(lambda: len(sentry_events(sentry)) >= 1, timeout=10)
    events = settled(sentry)
    assert len(events) == 1 and events[0]["tags"].get("resilience.breaker") == "tripping"
    assert exceptions(events[0]) == []  # the alert, a message: no error event of a 500


def test_an_exhausted_chain_is_one_error_per_task(app: tuple[ModuleType, ScriptedServer, str]) -> None:
    """Provider down and the rule step failing: three tasks fail, three error events with their attempts."""
    sentryapp, sentry, _ = app
    provider = TokenProvider(TokenLimits(requests=1000), window=60)
    provider.outage = 500
    try:
        results = [sentryapp.exhausted.delay(f"question {i}", provider.url) for i in range(3)]
        failures = []
        for result in results:
            with pytest.raises(Exception) as failed:
                result.get(timeout=60)
            failures.append(failed.value)
    finally:
        provider.close()
    assert all(type(failure).__name__ == "FallbackExhausted" for failure in failures)
    wait_for(lambda: len(sentry_events(sentry)) >= 3, timeout=10)
    events = settled(sentry)
    assert [exceptions(event) for event in events] == [["FallbackExhausted"]] * 3
    assert all(event["level"] == "error" for event in events)
    attempts = events[0]["contexts"]["resilience"]["attempts"]
    assert [attempt["step"] for attempt in attempts] == ["sn.no_rule"]


def test_a_real_failure_with_an_object_the_chain_handled_still_arrives(
    app: tuple[ModuleType, ScriptedServer, str],
) -> None:
    """A step raising a cached exception is handled; a task failing with that object still reaches Sentry."""
    sentryapp, sentry, _ = app
    provider = TokenProvider(TokenLimits(requests=1000), window=60)
    provider.outage = 500
    try:
        answer = sentryapp.cached.delay("question", provider.url).get(timeout=60)
    finally:
        provider.close()
    assert isinstance(answer, FallbackResult) and answer.kind == "template"
    for task in (sentryapp.plain_load, sentryapp.plain_other):  # the same worker thread, in turn
        with pytest.raises(RuntimeError):
            task.delay().get(timeout=60)
    wait_for(lambda: len(sentry_events(sentry)) >= 2, timeout=10)
    messages = [event["exception"]["values"][-1]["value"] for event in settled(sentry)]
    assert messages == ["the rules model failed to load", "another failure, on an object of its own"]


def test_handled_errors_can_be_warnings_one_issue_per_provider_and_category(
    app: tuple[ModuleType, ScriptedServer, str],
) -> None:
    """With 'warning': the 500s a chain answered arrive handled, as warnings, under one fingerprint."""
    sentryapp, sentry, queue = app
    provider = TokenProvider(TokenLimits(requests=1000), window=60)
    provider.outage = 500
    try:
        answers = [
            sentryapp.answered.apply_async(
                (f"question {i}", provider.url), queue=queue + WARNING_QUEUE_SUFFIX
            )
            for i in range(3)
        ]
        assert all(isinstance(answer.get(timeout=60), FallbackResult) for answer in answers)
    finally:
        provider.close()
    wait_for(lambda: len(sentry_events(sentry)) >= 3, timeout=10)
    events = settled(sentry)
    assert len(events) == 3
    assert {event["level"] for event in events} == {"warning"}
    assert all(value["mechanism"]["handled"] for event in events for value in event["exception"]["values"])
    assert {tuple(event["fingerprint"]) for event in events} == {
        ("celery-resilience", "handled", "answering", "server_error")
    }
    assert all(exceptions(event) == ["InternalServerError"] for event in events)
