"""A real HTTP server on loopback that answers whatever the test tells it to."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ScriptedServer:
    """Every request gets ``answer``, or what ``answer_for`` makes of its body; ``requests``
    counts them."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.answer_for: Callable[[bytes], Answer] | None = None
        self.window: tuple[int, float] | None = None  # (count, seconds): a provider's sliding limit
        self._accepted: list[float] = []
        self._window_lock = threading.Lock()
        self.requests = 0
        self.arrivals: list[float] = []
        self.bodies: list[tuple[str, bytes]] = []
        self.received: list[tuple[float, str, bytes]] = []  # (arrival, path, body), appended at once
        self.arrived = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                server.bodies.append((self.path, body))
                server.received.append((time.time(), self.path, body))
                server.requests += 1
                server.arrivals.append(time.time())
                server.arrived.set()
                answer = server.within_limit() or (
                    server.answer if server.answer_for is None else server.answer_for(body)
                )
                if answer.delay:
                    time.sleep(answer.delay)
                payload = json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _reply

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def limit(self, count: int, seconds: float) -> None:
        """Answer 429 to any request beyond ``count`` in a sliding window of ``seconds``, as a
        provider counting in its own window does."""
        self.window = (count, seconds)

    def within_limit(self) -> Answer | None:
        """A 429 when the sliding window is full, else None (the request counts in it)."""
        if self.window is None:
            return None
        count, seconds = self.window
        with self._window_lock:
            now = time.time()
            self._accepted = [moment for moment in self._accepted if moment > now - seconds]
            if len(self._accepted) >= count:
                return Answer(
                    429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}
                )
            self._accepted.append(now)
        return None

    def respond(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        self.answer = Answer(status, body if body is not None else {}, headers or {}, delay)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sentry_events(sentry: ScriptedServer) -> list[tuple[float, dict[str, Any]]]:
    """The events in the envelopes a Sentry SDK posted, with their arrival times
    (an envelope is a header line, then item headers each followed by its payload)."""
    found = []
    for arrived, path, body in list(sentry.received):
        if not path.endswith("/envelope/"):
            continue
        lines = body.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                found.append((arrived, json.loads(payload)))
    return found
