"""What an exception says about the dependency that raised it.

A breaker must trip on an overloaded provider and must not trip on a bad prompt, so
every failure is sorted into a category with a breaker weight, without importing any
client library: the official ``openai`` and ``anthropic`` SDKs, ``httpx`` and
``requests`` are recognised by duck typing on ``status_code`` (on the exception or its
``response``), on ``code``/``type`` (attributes or the parsed ``body``), on headers
(``retry-after``, reset headers) and on class names along the MRO.

Quota exhaustion arrives as the same class and status as a rate limit (429) in the
official SDKs; only the code or message tells them apart, and it matters: a rate limit
passes in seconds, an exhausted quota does not pass until someone pays.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

from ..clock import SYSTEM_CLOCK

__all__ = ["Category", "Classification", "Classifier", "classify", "DEFAULT_WEIGHTS"]


class Category(str, enum.Enum):
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    RATE_LIMIT = "rate_limit"
    QUOTA_EXHAUSTED = "quota_exhausted"
    SERVER_ERROR = "server_error"
    OVERLOADED = "overloaded"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    BAD_REQUEST = "bad_request"
    AUTH = "auth"
    IGNORED = "ignored"
    OTHER = "other"

    @property
    def retryable(self) -> bool:
        """Whether trying the same call again later can succeed."""
        return self in _RETRYABLE

    @property
    def says_nothing_about_the_dependency(self) -> bool:
        return self in (
            Category.CONTEXT_WINDOW,
            Category.CONTENT_POLICY,
            Category.BAD_REQUEST,
            Category.IGNORED,
        )


_RETRYABLE = frozenset(
    {Category.TIMEOUT, Category.CONNECTION, Category.RATE_LIMIT, Category.SERVER_ERROR, Category.OVERLOADED}
)

# The reference's weights; errors that say nothing about the dependency weigh nothing.
DEFAULT_WEIGHTS: Mapping[Category, float] = {
    Category.TIMEOUT: 2.0,
    Category.CONNECTION: 2.0,
    Category.RATE_LIMIT: 1.5,
    Category.QUOTA_EXHAUSTED: 1.5,
    Category.SERVER_ERROR: 2.5,
    Category.OVERLOADED: 2.5,
    Category.CONTEXT_WINDOW: 0.0,
    Category.CONTENT_POLICY: 0.0,
    Category.BAD_REQUEST: 0.0,
    Category.AUTH: 0.0,
    Category.IGNORED: 0.0,
    Category.OTHER: 0.5,
}


class Classification(NamedTuple):
    """``category, weight, retry_after = classify(exc)``."""

    category: Category
    weight: float
    retry_after: float | None

    @property
    def retryable(self) -> bool:
        return self.category.retryable


Rule = Callable[[BaseException], "Category | str | None"]

_IGNORED_NAMES = frozenset({"Retry", "Ignore", "Reject", "CancelledError", "Terminated", "WorkerLostError"})
_TIMEOUT_NAMES = frozenset({"SoftTimeLimitExceeded", "TimeLimitExceeded", "TimeoutError", "timeout"})
_CONNECTION_NAMES = frozenset(
    {
        "ConnectionError",
        "ConnectError",
        "APIConnectionError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "ConnectionAbortedError",
        "RemoteDisconnected",
        "RemoteProtocolError",
        "ProtocolError",
        "NetworkError",
        "BrokenPipeError",
    }
)
_QUOTA = re.compile(r"insufficient_quota|quota|billing|spend.?limit|credit balance|payment", re.I)
_CONTEXT = re.compile(
    r"context_length_exceeded|context.?window|maximum context length|prompt is too long|too many tokens"
    r"|string_above_max_length|tokens? exceed",
    re.I,
)
_CONTENT = re.compile(r"content_policy|content.?filter|safety|moderation|flagged", re.I)
_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$"
)


@dataclass(frozen=True)
class Classifier:
    """Categories and weights; user ``rules`` are tried first, in order.

    A rule takes the exception and returns a category (or its name), or ``None`` to
    leave the decision to the next rule and finally to the built-in recognition.
    """

    weights: Mapping[Category, float]
    rules: tuple[Rule, ...] = ()
    clock: Callable[[], float] = SYSTEM_CLOCK.now

    @classmethod
    def default(cls) -> Classifier:
        return cls(dict(DEFAULT_WEIGHTS))

    def with_rules(self, rules: Iterable[Rule]) -> Classifier:
        return Classifier(self.weights, (*self.rules, *rules), self.clock)

    def __call__(self, exc: BaseException) -> Classification:
        category = self._user_category(exc) or _builtin_category(exc)
        return Classification(category, self.weights[category], _retry_after(exc, self.clock))

    def _user_category(self, exc: BaseException) -> Category | None:
        for rule in self.rules:
            found = rule(exc)
            if found is not None:
                return Category(found)
        return None


_DEFAULT = Classifier.default()


def classify(exc: BaseException) -> Classification:
    """Category, breaker weight and any ``retry_after`` (seconds) the error carried."""
    return _DEFAULT(exc)


def _builtin_category(exc: BaseException) -> Category:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _IGNORED_NAMES and _from_celery_or_asyncio(exc):
        return Category.IGNORED
    status = _status(exc)
    if status is not None:
        return _by_status(status, exc)
    if names & _TIMEOUT_NAMES or any(
        name.endswith("Timeout") or name.endswith("TimeoutError") for name in names
    ):
        return Category.TIMEOUT
    if names & _CONNECTION_NAMES:
        return Category.CONNECTION
    return Category.OTHER


def _from_celery_or_asyncio(exc: BaseException) -> bool:
    return any(
        cls.__module__.split(".")[0] in ("celery", "billiard", "asyncio", "concurrent")
        for cls in type(exc).__mro__
        if cls.__name__ in _IGNORED_NAMES
    )


def _by_status(status: int, exc: BaseException) -> Category:
    text = _signals(exc)
    if status == 429:
        return Category.QUOTA_EXHAUSTED if _QUOTA.search(text) else Category.RATE_LIMIT
    if status == 402:
        return Category.QUOTA_EXHAUSTED
    if status in (408, 504):
        return Category.TIMEOUT
    if status in (503, 529):
        return Category.OVERLOADED
    if status >= 500:
        return Category.SERVER_ERROR
    if status in (401, 403, 404):
        # A spend limit is sometimes a 403; everything else here is configuration.
        return Category.QUOTA_EXHAUSTED if _QUOTA.search(text) and status == 403 else Category.AUTH
    if status in (400, 413, 422):
        if _CONTEXT.search(text) or status == 413:
            return Category.CONTEXT_WINDOW
        if _CONTENT.search(text):
            return Category.CONTENT_POLICY
        return Category.BAD_REQUEST
    return Category.BAD_REQUEST if 400 <= status < 500 else Category.OTHER


def _status(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attribute in ("status_code", "status", "http_status"):
            value = getattr(holder, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def _signals(exc: BaseException) -> str:
    """Everything that can name the error: code, type, body and message, as one string."""
    parts: list[str] = [str(exc)]
    for attribute in ("code", "type"):
        value = getattr(exc, attribute, None)
        if isinstance(value, str):
            parts.append(value)
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            parts.extend(str(error.get(key, "")) for key in ("code", "type", "message"))
        elif isinstance(error, str):
            parts.append(error)
    return " ".join(parts)


def _headers(exc: BaseException) -> Mapping[str, Any] | None:
    for holder in (getattr(exc, "response", None), exc):
        headers = getattr(holder, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            return headers  # type: ignore[no-any-return]
    return None


def _retry_after(exc: BaseException, clock: Callable[[], float]) -> float | None:
    """Seconds the provider asked us to wait: ``retry-after-ms``, ``retry-after`` (seconds
    or an HTTP date), or the reset headers of OpenAI (``6m0s``) and Anthropic (a timestamp)."""
    headers = _headers(exc)
    if headers is None:
        return None
    value = _header(headers, "retry-after-ms")
    if value is not None and _number(value) is not None:
        return max(0.0, _number(value) / 1000)  # type: ignore[operator]
    value = _header(headers, "retry-after")
    if value is not None:
        seconds = _number(value)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - clock())
        except (TypeError, ValueError, IndexError):
            pass
    resets = [
        _reset_seconds(_header(headers, name), clock)
        for name in (
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-tokens-reset",
        )
    ]
    known = [seconds for seconds in resets if seconds is not None]
    return max(known) if known else None


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return None if value is None else str(value).strip()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _reset_seconds(text: str | None, clock: Callable[[], float]) -> float | None:
    if not text:
        return None
    seconds = _number(text)
    if seconds is not None:
        return max(0.0, seconds)
    match = _DURATION.match(text)
    if match and any(match.groups()):
        hours, minutes, secs, millis = (float(group) if group else 0.0 for group in match.groups())
        return hours * 3600 + minutes * 60 + secs + millis / 1000
    try:
        return max(0.0, datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() - clock())
    except ValueError:
        return None
