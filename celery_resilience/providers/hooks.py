"""HTTP client hooks that let every response of a provider's SDK steer its budget.

OpenAI's and Anthropic's Python SDKs send through an HTTP client the application may give
them (``httpx2`` in current releases, ``httpx`` before), which calls its ``event_hooks``
with each response. These hooks read the rate-limit headers (what the provider says is
left, 429s included) and, for the response of a guarded call, the ``usage`` that settles
its reservation: from the JSON body, or, for a streamed response, from its events as the
application reads them (the stream is passed through untouched; its usage settles the
call when it arrives). They read the response as either library gives it, so this module
needs no HTTP library of its own. A provider without a budget has its 429s counted and
nothing else.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from ..clock import Clock
from ..monitoring.counters import count_provider_429
from .quota import ProviderQuota, Reservation, current_reservation
from .usage import StreamUsage, limits_from_headers, usage_from_body

__all__ = ["async_response_hook", "response_hook"]


def _reservation(quota: ProviderQuota, provider: str, response: Any) -> Reservation | None:
    """The guarded call this successful response settles, if any."""
    reservation = current_reservation()
    if reservation is None or reservation.provider != provider or reservation.settled:
        return None
    if response.status_code >= 400 or not quota.counts_tokens(provider):
        return None
    return reservation


def _kind(response: Any) -> str:
    content_type = str(response.headers.get("content-type", ""))
    if "event-stream" in content_type:
        return "stream"
    return "json" if "json" in content_type else ""


class _Events:
    """Server-sent events read off the raw bytes as they pass, for the usage they carry: the
    call is settled as soon as the event that ends the count passes (an SDK may stop
    reading at OpenAI's ``[DONE]``). A stream closed before it keeps its reservation: the
    provider counts what it generated, whoever stopped reading."""

    def __init__(self, encoding: str, quota: ProviderQuota, reservation: Reservation) -> None:
        self.usage = StreamUsage()
        self._quota, self._reservation = quota, reservation
        self._buffer = b""
        self._inflate = (
            zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
            if encoding in ("gzip", "deflate")
            else None
        )

    def feed(self, chunk: bytes) -> None:
        self._buffer += self._inflate.decompress(chunk) if self._inflate is not None else chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                try:
                    self.usage.event(json.loads(payload))
                except ValueError:
                    continue
        if self.usage.final:
            self.settle()

    def settle(self) -> None:
        usage = self.usage.usage
        if usage is not None and not self._reservation.settled:
            self._quota.settle(self._reservation, usage)


def _readable(response: Any) -> str | None:
    """The stream's content encoding when its events can be read here, else None."""
    encoding = str(response.headers.get("content-encoding", "identity")).strip().lower()
    return encoding if encoding in ("identity", "", "gzip", "deflate") else None


def _stream_base(stream: Any, name: str) -> type[Any] | None:
    """The HTTP library's own stream class (``SyncByteStream`` or ``AsyncByteStream``):
    the response checks its stream against it, so the tee must be one."""
    return next((cls for cls in type(stream).__mro__ if cls.__name__ == name), None)


def _tee(quota: ProviderQuota, reservation: Reservation, response: Any) -> None:
    encoding = _readable(response)
    base = _stream_base(response.stream, "SyncByteStream")
    if encoding is None or base is None:
        return
    inner, events = response.stream, _Events(encoding, quota, reservation)

    class Tee(base):  # type: ignore[misc, valid-type]
        def __iter__(self) -> Iterator[bytes]:
            for chunk in inner:
                events.feed(chunk)
                yield chunk

        def close(self) -> None:
            inner.close()

    response.stream = Tee()


def _atee(quota: ProviderQuota, reservation: Reservation, response: Any) -> None:
    encoding = _readable(response)
    base = _stream_base(response.stream, "AsyncByteStream")
    if encoding is None or base is None:
        return
    inner, events = response.stream, _Events(encoding, quota, reservation)

    class Tee(base):  # type: ignore[misc, valid-type]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in inner:
                events.feed(chunk)
                yield chunk

        async def aclose(self) -> None:
            await inner.aclose()

    response.stream = Tee()


def _seen(quota: ProviderQuota, provider: str, response: Any, now: float) -> tuple[Reservation | None, Any]:
    """What every response says, whatever its body. Returns the guarded call whose JSON
    body settles it, with the headers' limits (settled together, one round trip); for
    anything else the headers are followed now, a stream of a guarded call is teed for
    its usage, and a 429 of a provider without a budget is counted."""
    limits = limits_from_headers(response.headers, now)
    reservation = _reservation(quota, provider, response)
    kind = _kind(response)
    if reservation is not None and kind == "json":
        return reservation, limits
    if limits:
        quota.follow(provider, limits)
    if response.status_code == 429 and provider not in quota.providers:
        count_provider_429(quota.count, provider)
    if reservation is not None and kind == "stream":
        reservation.streamed = True  # settled by the stream's usage, when it comes
        return None, reservation
    return None, None


def _settle_body(
    quota: ProviderQuota, provider: str, reservation: Reservation, limits: Any, body: Any
) -> None:
    usage = usage_from_body(body)
    if usage is not None:
        quota.settle(reservation, usage, limits)
    elif limits:
        quota.follow(provider, limits)


def response_hook(quota: ProviderQuota, provider: str, clock: Clock) -> Callable[[Any], None]:
    """For ``httpx2.Client(event_hooks={"response": [hook]})`` (or ``httpx.Client``)."""

    def on_response(response: Any) -> None:
        reservation, other = _seen(quota, provider, response, clock.now())
        if reservation is not None:
            response.read()
            _settle_body(quota, provider, reservation, other, response.json())
        elif isinstance(other, Reservation):
            _tee(quota, other, response)

    return on_response


def async_response_hook(
    quota: ProviderQuota, provider: str, clock: Clock
) -> Callable[[Any], Awaitable[None]]:
    """For ``httpx2.AsyncClient(event_hooks={"response": [hook]})`` (or ``httpx.AsyncClient``)."""

    async def on_response(response: Any) -> None:
        reservation, other = _seen(quota, provider, response, clock.now())
        if reservation is not None:
            await response.aread()
            _settle_body(quota, provider, reservation, other, response.json())
        elif isinstance(other, Reservation):
            _atee(quota, other, response)

    return on_response
