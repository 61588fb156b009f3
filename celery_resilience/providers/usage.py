"""What a call costs in tokens, before (an estimate) and after (what the provider counted),
and what the provider says is left of its limits.

Before the call: a prompt's input tokens come from ``resilience_token_counter`` when one
is configured (a real tokenizer), else from the estimate of one token per four bytes of
UTF-8 (OpenAI's rule of thumb for English; it overcounts short words and undercounts
some scripts, and the reconciliation corrects both). Output is the call's ``max_tokens``
when it names one, else the task's observed high percentile.

After the call, from the response body's ``usage``:
- OpenAI (chat completions): ``prompt_tokens`` and ``completion_tokens``; the Responses
  API: ``input_tokens`` and ``output_tokens``. Cached input tokens count toward OpenAI's
  limits, so they stay in.
- Anthropic: ``input_tokens`` (cache reads excluded, as Anthropic's input limit excludes
  them) plus ``cache_creation_input_tokens``, and ``output_tokens``.

And from the headers of every response, 429s included:
- OpenAI: ``x-ratelimit-remaining-requests`` / ``-tokens`` with ``x-ratelimit-reset-*``
  (durations such as ``6m0s`` or ``20ms``).
- Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining``
  with ``-reset`` (an RFC 3339 time).
- ``retry-after`` (seconds, or an HTTP date), for whichever unit ran out.
"""

from __future__ import annotations

import email.utils
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .budget import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, TOKENS

__all__ = [
    "DEFAULT_OUTPUT_ESTIMATE",
    "Limit",
    "OutputObserver",
    "StreamUsage",
    "Usage",
    "estimate_tokens",
    "limits_from_headers",
    "retry_after_from_headers",
    "usage_from_body",
]

# Output tokens assumed for a call that names no max_tokens, before any has been observed.
DEFAULT_OUTPUT_ESTIMATE = 1024


def estimate_tokens(text: str, counter: Callable[[str], int] | None = None) -> int:
    """A prompt's input tokens: the configured tokenizer's count, else one per four bytes."""
    if counter is not None:
        return int(counter(text))
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens as the provider counts them against its limits."""

    input_tokens: float
    output_tokens: float

    @property
    def total(self) -> float:
        return self.input_tokens + self.output_tokens


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def usage_from_body(body: object) -> Usage | None:
    """The ``usage`` of an OpenAI or Anthropic response body, or None without one."""
    usage = body.get("usage") if isinstance(body, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:  # OpenAI chat completions
        return Usage(_number(usage.get("prompt_tokens")), _number(usage.get("completion_tokens")))
    if "input_tokens" in usage or "output_tokens" in usage:
        # Anthropic adds what it wrote to its cache; OpenAI's Responses API has no such field.
        written = _number(usage.get("cache_creation_input_tokens"))
        return Usage(_number(usage.get("input_tokens")) + written, _number(usage.get("output_tokens")))
    return None


@dataclass(frozen=True, slots=True)
class Limit:
    """What the provider says is left of one unit, and in how many seconds it is whole again."""

    remaining: float
    reset: float | None
    limit: float | None = None  # the unit's whole count per the provider's window, when stated


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_OPENAI = {REQUESTS: "requests", TOKENS: "tokens"}
_ANTHROPIC = {
    REQUESTS: "requests",
    TOKENS: "tokens",
    INPUT_TOKENS: "input-tokens",
    OUTPUT_TOKENS: "output-tokens",
}


def _seconds(text: str, now: float) -> float | None:
    """``6m0s``, ``20ms``, ``1.5`` (seconds) or an RFC 3339 time, as seconds from ``now``."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if parts and "".join(number + unit for number, unit in parts) == text:
        return sum(float(number) * _SCALE[unit] for number, unit in parts)
    try:
        return max(0.0, datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() - now)
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError):
        return None


def limits_from_headers(headers: Mapping[str, str], now: float) -> dict[str, Limit]:
    """Each unit the headers speak of; ``now`` (seconds since the epoch) reads reset times."""
    lower = {str(name).lower(): str(value) for name, value in headers.items()}
    found: dict[str, Limit] = {}
    for unit, name in _OPENAI.items():
        remaining = lower.get(f"x-ratelimit-remaining-{name}")
        if remaining is not None:
            reset = lower.get(f"x-ratelimit-reset-{name}")
            limit = lower.get(f"x-ratelimit-limit-{name}")
            found[unit] = Limit(
                _float(remaining), _seconds(reset, now) if reset else None, _float(limit) if limit else None
            )
    for unit, name in _ANTHROPIC.items():
        remaining = lower.get(f"anthropic-ratelimit-{name}-remaining")
        if remaining is not None:
            reset = lower.get(f"anthropic-ratelimit-{name}-reset")
            limit = lower.get(f"anthropic-ratelimit-{name}-limit")
            found[unit] = Limit(
                _float(remaining), _seconds(reset, now) if reset else None, _float(limit) if limit else None
            )
    return found


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    for name, value in headers.items():
        if str(name).lower() == "retry-after":
            return _seconds(str(value), now)
    return None


def _float(text: str) -> float:
    try:
        return max(0.0, float(text))
    except ValueError:
        return math.inf  # unreadable: says nothing about what is left


class OutputObserver:
    """The output tokens a task's calls produced lately, per task: its high percentile is
    the estimate for a call that names no ``max_tokens``."""

    def __init__(self, keep: int = 500, percentile: float = 0.99, minimum: int = 20) -> None:
        self._keep, self._percentile, self._minimum = keep, percentile, minimum
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def observe(self, task: str, output_tokens: float) -> None:
        with self._lock:
            self._seen.setdefault(task, deque(maxlen=self._keep)).append(output_tokens)

    def estimate(self, task: str) -> float:
        seen = sorted(self._enough(task))
        if not seen:
            return DEFAULT_OUTPUT_ESTIMATE
        return seen[min(len(seen) - 1, max(0, math.ceil(self._percentile * len(seen)) - 1))]

    def mean(self, task: str) -> float:
        """What a call of the task produces on average (the default until enough are seen)."""
        seen = self._enough(task)
        return sum(seen) / len(seen) if seen else DEFAULT_OUTPUT_ESTIMATE

    def _enough(self, task: str) -> list[float]:
        """The task's recent outputs, or none until ``minimum`` have been seen."""
        with self._lock:
            seen = list(self._seen.get(task, ()))
        return seen if len(seen) >= self._minimum else []


class StreamUsage:
    """The usage a streamed response reports in its events: OpenAI's last chunk (with
    ``stream_options={"include_usage": True}``), or Anthropic's ``message_start`` (input)
    and last ``message_delta`` (output so far)."""

    def __init__(self) -> None:
        self._input: float | None = None
        self._output: float | None = None
        # The event that ends the count came: OpenAI's usage chunk, Anthropic's message_delta.
        self.final = False

    def event(self, data: object) -> None:
        if not isinstance(data, Mapping):
            return
        if data.get("type") == "message_start":
            message = data.get("message")
            found = usage_from_body(message) if isinstance(message, Mapping) else None
            if found is not None:
                self._input, self._output = found.input_tokens, found.output_tokens
            return
        if data.get("type") == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, Mapping) and "output_tokens" in usage:
                self._output, self.final = _number(usage.get("output_tokens")), True
                if "input_tokens" in usage:  # newer releases restate the input at the end
                    written = _number(usage.get("cache_creation_input_tokens"))
                    self._input = _number(usage.get("input_tokens")) + written
            return
        found = usage_from_body(data)
        if found is not None:
            self._input, self._output, self.final = found.input_tokens, found.output_tokens, True

    @property
    def usage(self) -> Usage | None:
        if self._input is None and self._output is None:
            return None
        return Usage(self._input or 0.0, self._output or 0.0)
