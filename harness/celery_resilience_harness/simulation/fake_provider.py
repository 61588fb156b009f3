"""A fake AI provider: the behaviour of an OpenAI-compatible chat-completions endpoint.

The scenarios need a provider that fails the way real ones do, on cue: its own
requests-per-minute limit (429 with ``retry-after`` and ``x-ratelimit-*`` headers), a
latency distribution with a long tail, an outage (503 or 500), slowness beyond the
client's timeout, an exhausted quota (429 ``insufficient_quota``, which must never be
retried) and recovery. This module decides each answer; ``fake_server`` serves it.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["ProviderSwitches", "FakeProvider", "Reply"]

# 99th percentile of the standard normal: sigma of a log-normal from its median and p99.
_Z99 = 2.3263


@dataclass(frozen=True)
class ProviderSwitches:
    """What the provider does now; a scenario replaces them over time.

    ``minute`` is the length of the provider's rate window in seconds: the simulation
    runs time faster, so a provider minute can be a few seconds.
    """

    rpm: int = 1000
    minute: float = 60.0
    latency_median: float = 0.25
    latency_p99: float = 1.5
    outage: int | None = None  # 503 or 500 while the provider is down
    slow: float = 0.0  # extra seconds on every answer (past the client's timeout: a timeout)
    quota_exhausted: bool = False

    def __post_init__(self) -> None:
        if self.rpm < 1 or self.minute <= 0:
            raise ValueError("rpm must be >= 1 and minute > 0")
        if not 0 < self.latency_median <= self.latency_p99:
            raise ValueError("latency must satisfy 0 < median <= p99")
        if self.outage not in (None, 500, 502, 503, 529):
            raise ValueError(f"outage must be None or a 5xx status, not {self.outage!r}")
        if self.slow < 0:
            raise ValueError("slow must be >= 0")

    def updated(self, changes: Mapping[str, Any]) -> ProviderSwitches:
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown provider switches: {sorted(unknown)}")
        return replace(self, **dict(changes))


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    delay: float  # seconds the server waits before answering


@dataclass
class _Counters:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    # (second since start, status) -> count, for the scenario's timeline.
    timeline: Counter[tuple[int, int]] = field(default_factory=Counter)


class FakeProvider:
    """One provider's state: its switches, its rate window and what it answered."""

    def __init__(
        self,
        name: str,
        switches: ProviderSwitches | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 7,
        answer: Callable[[str, str], str] | None = None,
    ) -> None:
        self.name = name
        self.switches = switches or ProviderSwitches()
        self._clock = clock
        self._random = random.Random(seed)
        self._answer = answer or choose_from_instructions
        self._accepted: deque[float] = deque()
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._started = clock()

    def set(self, **changes: Any) -> ProviderSwitches:
        with self._lock:
            self.switches = self.switches.updated(changes)
            return self.switches

    def reset(self) -> None:
        """A new run: counters zeroed and the rate window empty, so that each run meets
        the provider as the first did, not full of the previous run's calls."""
        with self._lock:
            self._counters = _Counters()
            self._accepted.clear()
            self._started = self._clock()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counters = self._counters
            return {
                "requests": counters.requests,
                "statuses": {str(status): n for status, n in sorted(counters.statuses.items())},
                "timeline": [
                    [second, status, n] for (second, status), n in sorted(counters.timeline.items())
                ],
                "switches": asdict(self.switches),
            }

    def complete(self, request: Mapping[str, Any]) -> Reply:
        """The answer to one ``POST /v1/chat/completions``."""
        with self._lock:
            now = self._clock()
            switches = self.switches
            reply = self._decide(request, switches, now)
            counters = self._counters
            counters.requests += 1
            counters.statuses[reply.status] += 1
            counters.timeline[(int(now - self._started), reply.status)] += 1
            return reply

    def _decide(self, request: Mapping[str, Any], switches: ProviderSwitches, now: float) -> Reply:
        window_start = now - switches.minute
        while self._accepted and self._accepted[0] <= window_start:
            self._accepted.popleft()
        if switches.outage is not None:
            return _error(switches.outage, _OUTAGE_TYPES.get(switches.outage, "server_error"), 0.02)
        if switches.quota_exhausted:
            return _error(
                429,
                "insufficient_quota",
                0.01,
                "You exceeded your current quota, please check your plan and billing details.",
            )
        used = len(self._accepted)
        if used >= switches.rpm:
            wait = max(0.001, self._accepted[0] + switches.minute - now)
            headers = _limit_headers(switches.rpm, 0, wait)
            headers["retry-after"] = str(math.ceil(wait))
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            return _error(429, "requests", 0.005, "Rate limit reached for requests", headers=headers)
        self._accepted.append(now)
        remaining = switches.rpm - used - 1
        reset = self._accepted[0] + switches.minute - now
        delay = self._latency(switches) + switches.slow
        return Reply(200, self._completion(request), _limit_headers(switches.rpm, remaining, reset), delay)

    def _latency(self, switches: ProviderSwitches) -> float:
        sigma = math.log(switches.latency_p99 / switches.latency_median) / _Z99
        return switches.latency_median * math.exp(self._random.gauss(0.0, sigma)) if sigma else 0.0

    def _completion(self, request: Mapping[str, Any]) -> dict[str, Any]:
        messages = request.get("messages") or []
        system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
        user = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
        content = self._answer(system, user)
        prompt_tokens = max(1, (len(system) + len(user)) // 4)
        completion_tokens = max(1, len(content) // 4)
        return {
            "id": f"chatcmpl-{self._random.getrandbits(48):012x}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request.get("model") or self.name),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


_OUTAGE_TYPES = {500: "server_error", 502: "server_error", 503: "service_unavailable", 529: "overloaded"}


def choose_from_instructions(system: str, user: str) -> str:
    """A stand-in model: when the instructions say ``Answer with one of: a, b, c``, one of
    those, the same one for the same text; otherwise a short acknowledgement."""
    marker = "answer with one of:"
    lowered = system.lower()
    if marker in lowered:
        options = [o.strip(" .") for o in system[lowered.index(marker) + len(marker) :].split(",")]
        options = [o for o in options if o]
        if options:
            digest = hashlib.blake2b(user.encode(), digest_size=4).digest()
            return options[int.from_bytes(digest, "big") % len(options)]
    return f"Noted: {user[:80]}"


def _limit_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(0, remaining)),
        "x-ratelimit-reset-requests": f"{max(0.0, reset):.3f}s",
    }


def _error(
    status: int,
    kind: str,
    delay: float,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    body = {
        "error": {
            "message": message or f"The server had an error ({kind}).",
            "type": kind,
            "param": None,
            "code": "rate_limit_exceeded" if kind == "requests" else kind,
        }
    }
    return Reply(status, body, headers or {}, delay)
