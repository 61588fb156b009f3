"""The fake provider, database and Sentry stand-in, through their real HTTP server and the
real clients: the limit and every switch behave as specified."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import sentry_sdk
from celery_resilience_harness.simulation.fake_database import (
    DatabaseSwitches,
    FakeDatabase,
    TooManyConnections,
)
from celery_resilience_harness.simulation.fake_provider import FakeProvider, ProviderSwitches
from celery_resilience_harness.simulation.fake_server import FakeServices
from celery_resilience_harness.simulation.services_client import ServicesClient

from celery_resilience import classify
from celery_resilience.testing import FakeClock

FAST: dict[str, Any] = {"latency_median": 0.001, "latency_p99": 0.002}


@pytest.fixture
def services() -> Iterator[FakeServices]:
    with FakeServices(
        {"primary": ProviderSwitches(rpm=3, minute=60, **FAST), "secondary": ProviderSwitches(**FAST)},
        DatabaseSwitches(max_connections=2, acquire_timeout=0.05, query_time=0.0),
    ) as running:
        yield running


def client(services: FakeServices, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{services.url}/primary/v1", api_key="k", max_retries=0, timeout=timeout)


def ask(c: openai.OpenAI, text: str = "hello") -> str:
    reply = c.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "Answer with one of: bug, billing, question"},
            {"role": "user", "content": text},
        ],
    )
    return reply.choices[0].message.content or ""


def test_answers_in_the_chat_completions_shape_and_chooses_from_the_instructions(
    services: FakeServices,
) -> None:
    """The fake provider answers in the chat completions shape, choosing from the instructions."""
    first = ask(client(services), "the app crashes")
    assert first in ("bug", "billing", "question")
    assert ask(client(services), "the app crashes") == first  # the same text, the same answer


def test_the_requests_per_minute_limit_answers_429_with_retry_after_and_ratelimit_headers(
    services: FakeServices,
) -> None:
    """Past its limit the fake provider answers 429 with retry-after and rate-limit headers."""
    raw = httpx.post(f"{services.url}/primary/v1/chat/completions", json={"messages": []})
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    ask(client(services))
    ask(client(services))
    with pytest.raises(openai.RateLimitError) as refused:
        ask(client(services))
    headers = refused.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    category, weight, retry_after = classify(refused.value)
    assert category.value == "rate_limit" and weight == 1.5
    assert retry_after is not None and 0 < retry_after <= 60
    assert services.stats()["providers"]["primary"]["statuses"] == {"200": 3, "429": 1}


def test_the_window_slides_with_the_clock() -> None:
    """The fake provider's rate window slides with its clock."""
    clock = FakeClock(0.0)
    provider = FakeProvider("p", ProviderSwitches(rpm=2, minute=10, **FAST), clock=clock)
    assert [provider.complete({}).status for _ in range(3)] == [200, 200, 429]
    clock.advance(10.01)
    assert provider.complete({}).status == 200


@pytest.mark.parametrize(
    ("switches", "error", "category"),
    [
        ({"outage": 503}, openai.InternalServerError, "overloaded"),
        ({"outage": 500}, openai.InternalServerError, "server_error"),
        ({"quota_exhausted": True}, openai.RateLimitError, "quota_exhausted"),
    ],
)
def test_outage_and_quota_switches_fail_as_real_providers_do_and_recovery_ends_them(
    services: FakeServices, switches: dict[str, object], error: type[Exception], category: str
) -> None:
    """Outage and quota switches fail as real providers do, and recovery ends them."""
    control = ServicesClient(services.url)
    control.control({"providers": {"primary": switches}})
    with pytest.raises(error) as failed:
        ask(client(services))
    assert classify(failed.value).category.value == category
    control.control({"providers": {"primary": {"outage": None, "quota_exhausted": False}}})
    assert ask(client(services))


def test_slowness_makes_the_client_time_out(services: FakeServices) -> None:
    """A slow fake provider makes the official client time out."""
    ServicesClient(services.url).control({"providers": {"primary": {"slow": 1.0}}})
    with pytest.raises(openai.APITimeoutError) as failed:
        ask(client(services, timeout=0.2))
    assert classify(failed.value).category.value == "timeout"


def test_latency_follows_the_configured_median_and_tail() -> None:
    """The fake provider's latency follows the configured median and tail."""
    provider = FakeProvider("p", ProviderSwitches(rpm=10**6, latency_median=0.2, latency_p99=1.0), seed=3)
    delays = sorted(provider.complete({}).delay for _ in range(4000))
    assert 0.18 < delays[2000] < 0.22
    assert 0.8 < delays[3960] < 1.25


def test_bad_switches_are_refused_and_change_nothing(services: FakeServices) -> None:
    """Bad switches are refused and change nothing."""
    control = ServicesClient(services.url)
    for bad in (
        {"providers": {"primary": {"rpm": 0}}},
        {"providers": {"primary": {"outage": 404}}},
        {"providers": {"nobody": {"outage": 503}}},
        {"providers": {"primary": {"unknown": 1}}},
        {"db": {"held_by_others": 99}},
    ):
        with pytest.raises(Exception, match="400"):
            control.control(bad)
    assert control.stats()["providers"]["primary"]["switches"]["rpm"] == 3


def test_the_database_refuses_connections_beyond_its_pool_and_others_can_hold_some() -> None:
    """The fake database refuses connections beyond its pool, and others can hold some of it."""
    database = FakeDatabase(DatabaseSwitches(max_connections=3, acquire_timeout=0.0))
    first = database.connect()
    database.set(held_by_others=2)
    with pytest.raises(TooManyConnections):
        database.connect()
    assert database.stats()["usage"] == 1.0
    database.close(first)
    second = database.connect()
    assert database.query_delay(second) >= 0.0
    database.set(held_by_others=0)
    assert database.in_use() == 1


def test_the_database_over_http(services: FakeServices) -> None:
    """The fake database answers over HTTP."""
    opened = [httpx.post(f"{services.url}/db/connect").json()["connection"] for _ in range(2)]
    refused = httpx.post(f"{services.url}/db/connect")
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "too_many_connections"
    assert httpx.post(f"{services.url}/db/query", json={"connection": opened[0]}).status_code == 200
    httpx.post(f"{services.url}/db/close", json={"connection": opened[0]})
    assert httpx.post(f"{services.url}/db/connect").status_code == 200
    assert httpx.get(f"{services.url}/db/stats").json()["counts"]["refused"] == 1


def test_the_sentry_stand_in_counts_what_the_real_sdk_sends(services: FakeServices) -> None:
    """The Sentry stand-in counts the events the real SDK sends, by level and by kind."""
    sentry = sentry_sdk.Client(dsn=ServicesClient(services.url).sentry_dsn(), default_integrations=False)
    for _ in range(2):
        sentry.capture_event(
            {
                "message": "breaker tripped",
                "level": "warning",
                "fingerprint": ["breaker"],
                "tags": {"resilience.rule": "breaker_trip"},
            }
        )
    sentry.capture_event({"message": "ValueError: boom", "level": "error"})
    handled = {"type": "RateLimitError", "value": "429", "mechanism": {"type": "openai", "handled": True}}
    sentry.capture_event(
        {"level": "warning", "exception": {"values": [handled]}, "tags": {"resilience.handled": "rate_limit"}}
    )
    sentry.flush(timeout=5)
    stats = services.stats()["sentry"]
    assert stats["events"] == 4
    assert stats["by_level"] == {"warning": 3, "error": 1}
    assert stats["by_kind"] == {"alert breaker_trip": 2, "message": 1, "handled rate_limit": 1}
    assert stats["issues"] == 3


def test_a_client_that_gives_up_mid_request_prints_nothing(
    services: FakeServices, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A request cut short is logged, never printed as a traceback over the replay's progress."""
    import logging

    with caplog.at_level(logging.DEBUG, "celery_resilience_harness.fake_services"):
        try:
            raise BrokenPipeError("the client went away")
        except BrokenPipeError:
            services.httpd.handle_error(None, ("127.0.0.1", 50650))
    assert any("ended early" in record.getMessage() for record in caplog.records)
    assert "Traceback" not in capfd.readouterr().err
