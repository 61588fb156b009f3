"""A provider that counts tokens as the real ones do, served over HTTP on loopback.

Two styles, each with its own endpoint, body and headers:

- ``openai`` (``POST /v1/chat/completions``): requests and tokens per window. A call is
  charged at arrival ``max(max_tokens, its prompt's tokens)``, as OpenAI's admission
  does, and the charge becomes the tokens really used when it answers. Headers:
  ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.
- ``anthropic`` (``POST /v1/messages``): requests, input tokens (counted at arrival) and
  output tokens (counted as produced) per window, each apart. Headers:
  ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,remaining,reset}``.

Windows slide, as the providers' own do: a call is refused (429 with ``retry-after``)
when the last ``window`` seconds plus it would exceed a limit. ``set_limits`` changes the
hidden limits during a run; ``headers=False`` answers without rate-limit headers (a
provider or gateway that sends none); ``outage`` answers every call with that status.
An answer's size is ``answer in N tokens`` when the prompt says so, else drawn for the
prompt from a log-normal spread (median and p99 as real traffic has), capped by
``max_tokens``. A request with ``"stream": true`` is answered with server-sent events as
each provider sends them: OpenAI's chunks, with a last chunk carrying ``usage`` only when
``stream_options`` asks for it; Anthropic's ``message_start`` (input) to ``message_delta``
(output).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import NormalDist
from typing import Any

__all__ = ["TokenLimits", "TokenProvider", "prompt_tokens"]

_ASKED = re.compile(r"answer in (\d+) tokens")
_NORMAL = NormalDist()
_Z99 = _NORMAL.inv_cdf(0.99)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """What the provider counts for a prompt: one token per four bytes of its text."""
    text = "".join(_text(message.get("content", "")) for message in messages)
    return math.ceil(len(text.encode()) / 4)


def _text(content: object) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


class TokenLimits:
    """The hidden limits per window; ``None`` does not count that unit."""

    def __init__(
        self,
        requests: int | None = None,
        tokens: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        self.by_unit: dict[str, int | None] = {
            "requests": requests,
            "tokens": tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }


class TokenProvider:
    """One provider on loopback; ``url`` is its base URL for the SDK (``.../v1``)."""

    def __init__(
        self,
        limits: TokenLimits,
        window: float = 60.0,
        style: str = "openai",
        output_median: int = 300,
        output_p99: int = 2000,
        headers: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if style not in ("openai", "anthropic"):
            raise ValueError(f"style must be 'openai' or 'anthropic', not {style!r}")
        self.window, self.style, self.headers = window, style, headers
        self.output_median, self.output_p99 = output_median, output_p99
        self.outage: int | None = None
        self.fail_next = 0
        self.remaining: int | None = None  # overrides the remaining-tokens header
        self._clock = clock
        self._limits = dict(limits.by_unit)
        # (arrival, unit, amount) of every counted charge; a list per call id for updates
        self._charges: list[list[Any]] = []
        self.statuses: list[int] = []
        self.answered: list[tuple[float, int]] = []  # (time, status) of every answer
        self.served: list[tuple[float, int, int]] = []  # (time, input, output) of each answer
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def set_limits(self, **limits: int | None) -> None:
        """Change the hidden limits now (a tier change, another tenant on the key)."""
        with self._lock:
            for unit, value in limits.items():
                if unit not in self._limits:
                    raise ValueError(f"unknown unit {unit!r}")
                self._limits[unit] = value

    def limit(self, unit: str) -> int | None:
        with self._lock:
            return self._limits[unit]

    def output_for(self, prompt: str, cap: int | None) -> int:
        asked = _ASKED.search(prompt)
        if asked:
            size = int(asked.group(1))
        else:
            digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
            uniform = (int.from_bytes(digest, "big") + 0.5) / 2**64
            sigma = math.log(self.output_p99 / self.output_median) / _Z99
            size = max(1, round(self.output_median * math.exp(sigma * _NORMAL.inv_cdf(uniform))))
        return size if cap is None else min(size, cap)

    def answer(self, path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        messages = request.get("messages") or []
        prompt = "".join(_text(message.get("content", "")) for message in messages)
        cap = request.get("max_tokens")
        input_tokens = prompt_tokens(messages)
        output_tokens = self.output_for(prompt, int(cap) if cap is not None else None)
        with self._lock:
            now = self._clock()
            used = self._used(now)
            if self.outage is not None or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                status = self.outage or 500
                self._answer(now, status)
                return status, self._error(status, "the provider is unavailable"), {}
            at_arrival = {
                "requests": 1,
                "tokens": max(int(cap or 0), input_tokens) if self.style == "openai" else 0,
                "input_tokens": input_tokens,
                "output_tokens": 0,
            }
            over = [
                unit
                for unit, limit in self._limits.items()
                if limit is not None and used[unit] + at_arrival[unit] > limit
            ]
            # Output is counted as produced: a call may start while output has room left.
            if (
                self._limits["output_tokens"] is not None
                and used["output_tokens"] >= self._limits["output_tokens"]
            ):
                over.append("output_tokens")
            if over:
                self._answer(now, 429)
                headers = self._headers(used, now)
                headers["retry-after"] = str(max(1, math.ceil(self._reset(over[0], now))))
                return 429, self._error(429, f"Rate limit reached for {over[0]}"), headers
            charged = {
                "requests": 1,
                "tokens": input_tokens + output_tokens,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }
            for unit, amount in charged.items():
                self._charges.append([now, unit, amount])
                used[unit] += amount
            self._answer(now, 200)
            self.served.append((now, input_tokens, output_tokens))
            headers = self._headers(used, now)
        return 200, self._body(request, input_tokens, output_tokens), headers

    def _answer(self, now: float, status: int) -> None:
        self.statuses.append(status)
        self.answered.append((now, status))

    def _used(self, now: float) -> dict[str, int]:
        used = dict.fromkeys(self._limits, 0)
        self._charges = [charge for charge in self._charges if charge[0] > now - self.window]
        for _, unit, amount in self._charges:
            used[unit] += amount
        return used

    def _reset(self, unit: str, now: float) -> float:
        """Seconds until the oldest charge of ``unit`` leaves the window."""
        oldest = min((at for at, name, _ in self._charges if name == unit), default=now)
        return max(0.0, oldest + self.window - now)

    def _headers(self, used: dict[str, int], now: float) -> dict[str, str]:
        if not self.headers:
            return {}
        headers: dict[str, str] = {}
        for unit, limit in self._limits.items():
            if limit is None:
                continue
            remaining = max(0, limit - used[unit])
            if unit == "tokens" and self.remaining is not None:
                remaining = self.remaining
            reset = self._reset(unit, now)
            if self.style == "openai":
                headers[f"x-ratelimit-limit-{unit}"] = str(limit)
                headers[f"x-ratelimit-remaining-{unit}"] = str(remaining)
                headers[f"x-ratelimit-reset-{unit}"] = f"{reset:.3f}s"
            else:
                name = unit.replace("_", "-")
                at = datetime.fromtimestamp(now + reset, tz=timezone.utc)
                headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
                headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
                headers[f"anthropic-ratelimit-{name}-reset"] = at.isoformat().replace("+00:00", "Z")
        return headers

    def _error(self, status: int, message: str) -> dict[str, Any]:
        if self.style == "anthropic":
            kind = "rate_limit_error" if status == 429 else "api_error"
            return {"type": "error", "error": {"type": kind, "message": message}}
        code = "rate_limit_exceeded" if status == 429 else "server_error"
        return {"error": {"message": message, "type": code, "code": code}}

    def _body(self, request: dict[str, Any], input_tokens: int, output_tokens: int) -> dict[str, Any]:
        text = "ok " * output_tokens
        model = request.get("model", "test")
        if self.style == "anthropic":
            return {
                "id": "msg_test",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(self._clock()),
            "model": model,
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }

    def most_in_any_window(self, unit: str = "tokens") -> int:
        """The most of ``unit`` the provider counted inside one window (from its answers)."""
        with self._lock:
            served = sorted(self.served)

        def amount(entry: tuple[float, int, int]) -> int:
            _, input_tokens, output_tokens = entry
            return {
                "requests": 1,
                "tokens": input_tokens + output_tokens,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }[unit]

        best = 0
        for start, _, _ in served:
            best = max(
                best, sum(amount(entry) for entry in served if start <= entry[0] < start + self.window)
            )
        return best

    def events(self, request: dict[str, Any], body: dict[str, Any]) -> bytes:
        """A successful answer as the provider streams it."""
        if self.style == "anthropic":
            usage, text = body["usage"], body["content"][0]["text"]
            start = {**body, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            events: list[tuple[str | None, Any]] = [
                ("message_start", {"type": "message_start", "message": start}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta", "text": text}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                   "usage": {"output_tokens": usage["output_tokens"]}}),
                ("message_stop", {"type": "message_stop"}),
            ]  # fmt: skip
        else:
            chunk = {key: body[key] for key in ("id", "created", "model")} | {
                "object": "chat.completion.chunk"
            }
            text = body["choices"][0]["message"]["content"]
            events = [
                (None, chunk | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                             "finish_reason": None}]}),
                (None, chunk | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            ]  # fmt: skip
            if (request.get("stream_options") or {}).get("include_usage"):
                events.append((None, chunk | {"choices": [], "usage": body["usage"]}))
            events.append((None, "[DONE]"))
        lines = [
            (f"event: {name}\n" if name else "")
            + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
            for name, data in events
        ]
        return "".join(lines).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                status, body, headers = provider.answer(self.path, request)
                if status == 200 and request.get("stream"):
                    self._send(status, provider.events(request, body), "text/event-stream", headers)
                else:
                    self._send(status, json.dumps(body).encode(), "application/json", headers)

            def _send(self, status: int, payload: bytes, content_type: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
