"""Classification of real client exceptions, produced against a local HTTP server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import anthropic
import httpx
import openai
import pytest
import requests
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded

from celery_resilience.breakers.classification import Category, Classifier, classify
from tests.http_server import ScriptedServer

CHAT_OK = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def call_openai(url: str, timeout: float = 5.0) -> Any:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=timeout)
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


def call_anthropic(url: str, timeout: float = 5.0) -> Any:
    client = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0, timeout=timeout)
    return client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def call_httpx(url: str, timeout: float = 5.0) -> Any:
    return httpx.post(f"{url}/x", timeout=timeout).raise_for_status()


def call_requests(url: str, timeout: float = 5.0) -> Any:
    response = requests.post(f"{url}/x", timeout=timeout)
    response.raise_for_status()
    return response


CLIENTS: dict[str, Callable[..., Any]] = {
    "openai": call_openai,
    "anthropic": call_anthropic,
    "httpx": call_httpx,
    "requests": call_requests,
}


def raised(call: Callable[..., Any], *args: Any, **kwargs: Any) -> BaseException:
    try:
        call(*args, **kwargs)
    except Exception as error:
        return error
    raise AssertionError("the call did not fail")


STATUS_CASES = [
    (
        429,
        {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
        {"retry-after": "7"},
        Category.RATE_LIMIT,
        7.0,
    ),
    (
        429,
        {
            "error": {
                "message": "You exceeded your current quota",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
        },
        {},
        Category.QUOTA_EXHAUSTED,
        None,
    ),
    (500, {"error": {"message": "boom", "type": "server_error"}}, {}, Category.SERVER_ERROR, None),
    (502, {"error": {"message": "bad gateway"}}, {}, Category.SERVER_ERROR, None),
    (503, {"error": {"message": "unavailable"}}, {"retry-after": "30"}, Category.OVERLOADED, 30.0),
    (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        {},
        Category.OVERLOADED,
        None,
    ),
    (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens",
                "code": "context_length_exceeded",
            }
        },
        {},
        Category.CONTEXT_WINDOW,
        None,
    ),
    (
        400,
        {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}},
        {},
        Category.CONTEXT_WINDOW,
        None,
    ),
    (
        400,
        {
            "error": {
                "message": "Your request was rejected by our safety system",
                "code": "content_policy_violation",
            }
        },
        {},
        Category.CONTENT_POLICY,
        None,
    ),
    (
        400,
        {"error": {"message": "'messages' is a required property", "code": "invalid_value"}},
        {},
        Category.BAD_REQUEST,
        None,
    ),
    (422, {"error": {"message": "unprocessable"}}, {}, Category.BAD_REQUEST, None),
    (401, {"error": {"message": "Incorrect API key"}}, {}, Category.AUTH, None),
    (403, {"error": {"message": "forbidden"}}, {}, Category.AUTH, None),
    (404, {"error": {"message": "model not found"}}, {}, Category.AUTH, None),
]


# Plain HTTP clients do not parse the body, so only the SDKs can tell a quota, a context
# window or a content policy apart from the status alone.
BODY_CATEGORIES = (Category.QUOTA_EXHAUSTED, Category.CONTEXT_WINDOW, Category.CONTENT_POLICY)
CLIENT_CASES = [
    (client, *case)
    for client in CLIENTS
    for case in STATUS_CASES
    if client in ("openai", "anthropic") or case[3] not in BODY_CATEGORIES
]


@pytest.mark.parametrize(("client", "status", "body", "headers", "category", "retry_after"), CLIENT_CASES)
def test_http_errors_of_every_client(
    server: ScriptedServer,
    client: str,
    status: int,
    body: Any,
    headers: dict[str, str],
    category: Category,
    retry_after: float | None,
) -> None:
    """Each client's own exception for a status, body and headers lands in the right category."""
    server.respond(status, body, headers)
    result = classify(raised(CLIENTS[client], server.url))
    assert result.category is category
    assert result.retry_after == retry_after


@pytest.mark.parametrize("client", list(CLIENTS))
def test_timeouts_of_every_client(server: ScriptedServer, client: str) -> None:
    """A server slower than the client's timeout is a timeout, weight 2.0."""
    server.respond(200, CHAT_OK, delay=1.0)
    result = classify(raised(CLIENTS[client], server.url, timeout=0.2))
    assert (result.category, result.weight) == (Category.TIMEOUT, 2.0)


@pytest.mark.parametrize("client", list(CLIENTS))
def test_refused_connections_of_every_client(client: str) -> None:
    """Nothing listening is a connection failure."""
    result = classify(raised(CLIENTS[client], f"http://127.0.0.1:{closed_port()}"))
    assert result.category is Category.CONNECTION


def test_reset_headers_give_retry_after(server: ScriptedServer) -> None:
    """OpenAI's '1m30s' reset headers and Anthropic's timestamps become seconds."""
    server.respond(429, {"error": {"message": "slow down"}}, {"x-ratelimit-reset-requests": "1m30s"})
    assert classify(raised(call_openai, server.url)).retry_after == 90.0
    server.respond(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "1500"})
    assert classify(raised(call_openai, server.url)).retry_after == 1.5
    reset = datetime.fromtimestamp(time.time() + 42, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    server.respond(
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
        {"anthropic-ratelimit-requests-reset": reset},
    )
    assert classify(raised(call_anthropic, server.url)).retry_after == pytest.approx(42, abs=2)


def test_weights_follow_the_reference() -> None:
    """The reference's weights; errors that say nothing about the dependency weigh nothing."""
    assert classify(TimeoutError()).weight == 2.0
    assert classify(ValueError("bad input")).weight == 0.5
    assert classify(ValueError("bad input")).category is Category.OTHER
    for error in (Retry(), Ignore(), Reject(), asyncio.CancelledError()):
        assert classify(error) == (Category.IGNORED, 0.0, None)


def test_celery_time_limits_are_timeouts() -> None:
    """A soft time limit is the call overrunning its budget."""
    assert classify(SoftTimeLimitExceeded()).category is Category.TIMEOUT


def test_same_named_user_classes_are_not_mistaken_for_celery_control_flow() -> None:
    """Only Celery's own Retry is control flow; an application's Retry class is just an error."""

    class Retry(Exception):
        pass

    assert classify(Retry()).category is Category.OTHER


def test_user_rules_and_weights() -> None:
    """Users register rules (first match wins) and override weights."""

    class VendorBusy(Exception):
        pass

    classifier = Classifier.default().with_rules(
        [lambda e: "overloaded" if isinstance(e, VendorBusy) else None]
    )
    assert classifier(VendorBusy()).category is Category.OVERLOADED
    heavy = Classifier({**Classifier.default().weights, Category.OTHER: 0.0})
    assert heavy(ValueError()).weight == 0.0


def test_retryable_categories() -> None:
    """Rate limits and outages are worth retrying; quota, bad input and auth are not."""
    assert Category.RATE_LIMIT.retryable and Category.OVERLOADED.retryable
    assert not Category.QUOTA_EXHAUSTED.retryable and not Category.BAD_REQUEST.retryable
