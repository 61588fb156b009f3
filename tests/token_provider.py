"""An OpenAI-style chat completions endpoint on loopback that counts tokens as a provider
does: a sliding window of tokens, ``usage`` in each answer, rate-limit headers on every
response, and a 429 for a call the window cannot take."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_OUTPUT = re.compile(r"answer in (\d+) tokens")


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """What the provider counts for the prompt: one token per four bytes, as the estimate."""
    text = "".join(str(message.get("content", "")) for message in messages)
    return math.ceil(len(text.encode()) / 4)


class TokenProvider:
    """``tokens`` per ``seconds`` in a sliding window, charged in full when a call arrives
    (its prompt and the output it will produce). ``output`` is what an answer produces
    unless the prompt says ``answer in N tokens``; ``fail_next`` answers that many calls
    with 500 (uncounted); ``remaining`` overrides the remaining-tokens header (another
    client sharing the key)."""

    def __init__(self, tokens: int, seconds: float, output: int = 20) -> None:
        self.tokens, self.seconds, self.output = tokens, seconds, output
        self.fail_next = 0
        self.remaining: int | None = None
        self.charged: list[tuple[float, int]] = []  # (arrival, tokens) of every counted call
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                status, body, headers = provider.answer(request)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        messages = request.get("messages") or []
        asked = _OUTPUT.search(json.dumps(messages))
        output = int(asked.group(1)) if asked else self.output
        if request.get("max_tokens") is not None:
            output = min(output, int(request["max_tokens"]))
        cost = prompt_tokens(messages) + output
        with self._lock:
            now = time.time()
            used = sum(tokens for at, tokens in self.charged if at > now - self.seconds)
            if self.fail_next > 0:
                self.fail_next -= 1
                status = 500
            elif used + cost > self.tokens:
                status = 429
            else:
                status = 200
                self.charged.append((now, cost))
                used += cost
            self.statuses.append(status)
        remaining = self.tokens - used if self.remaining is None else self.remaining
        headers = {
            "x-ratelimit-limit-tokens": str(self.tokens),
            "x-ratelimit-remaining-tokens": str(max(0, remaining)),
            "x-ratelimit-reset-tokens": f"{self.seconds:g}s",
        }
        if status == 429:
            headers["retry-after"] = f"{self.seconds:g}"
            return (
                status,
                {"error": {"message": "Rate limit reached for tokens", "code": "rate_limit_exceeded"}},
                headers,
            )
        if status == 500:
            return status, {"error": {"message": "internal error"}}, headers
        body = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "test"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok " * output},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens(messages),
                "completion_tokens": output,
                "total_tokens": prompt_tokens(messages) + output,
            },
        }
        return status, body, headers

    def most_in_any_window(self) -> int:
        """The most tokens the provider counted inside one window of its length."""
        with self._lock:
            charged = sorted(self.charged)
        return max(
            (
                sum(tokens for at, tokens in charged if start <= at <= start + self.seconds)
                for start, _ in charged
            ),
            default=0,
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
