"""HTTP client hooks that let every response of a provider's SDK steer its budget.

OpenAI's and Anthropic's Python SDKs send through an HTTP client the application may give
them (``httpx2`` in current releases, ``httpx`` before), which calls its ``event_hooks``
with each response. These hooks read
the rate-limit headers (what the provider says is left, 429s included) and, for the
response of a guarded call, the ``usage`` that settles its reservation. They read the
response as either library gives it (``headers``, ``status_code``, ``read()``, ``json()``), so
this module needs no HTTP library of its own. Streamed responses are left unread: their
usage arrives in the last event, and reading it here would end the stream early.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..clock import Clock
from .quota import ProviderQuota, current_reservation
from .usage import limits_from_headers, usage_from_body

__all__ = ["response_hook", "async_response_hook"]


def _wants_body(provider: str, response: Any) -> bool:
    reservation = current_reservation()
    if reservation is None or reservation.provider != provider:
        return False
    content_type = str(response.headers.get("content-type", ""))
    return response.status_code < 400 and "json" in content_type and "event-stream" not in content_type


def _settle(quota: ProviderQuota, body: object) -> None:
    reservation = current_reservation()
    usage = usage_from_body(body)
    if reservation is not None and usage is not None:
        quota.settle(reservation, usage)


def response_hook(quota: ProviderQuota, provider: str, clock: Clock) -> Callable[[Any], None]:
    """For ``httpx2.Client(event_hooks={"response": [hook]})`` (or ``httpx.Client``)."""

    def on_response(response: Any) -> None:
        limits = limits_from_headers(response.headers, clock.now())
        if limits:
            quota.follow(provider, limits)
        if _wants_body(provider, response):
            response.read()
            _settle(quota, response.json())

    return on_response


def async_response_hook(
    quota: ProviderQuota, provider: str, clock: Clock
) -> Callable[[Any], Awaitable[None]]:
    """For ``httpx2.AsyncClient(event_hooks={"response": [hook]})`` (or ``httpx.AsyncClient``)."""

    async def on_response(response: Any) -> None:
        limits = limits_from_headers(response.headers, clock.now())
        if limits:
            quota.follow(provider, limits)
        if _wants_body(provider, response):
            await response.aread()
            _settle(quota, response.json())

    return on_response
