"""One loopback HTTP server for everything the pipeline depends on in a scenario.

Routes:
- ``POST /<provider>/v1/chat/completions``: a fake provider (``fake_provider``); point the
  official ``openai`` client at ``base_url=<url>/<provider>/v1``;
- ``POST /db/connect``, ``/db/query``, ``/db/close`` and ``GET /db/stats``: the fake database;
- ``POST /sentry/api/<project>/envelope/``: a Sentry stand-in that counts what arrives,
  so ``sentry_sdk.init(dsn=<url with key>/sentry/1)`` reports to it;
- ``POST /_control``: change switches (``{"providers": {"primary": {"outage": 503}},
  "db": {"held_by_others": 18}}``); ``GET /_stats``; ``POST /_reset`` zeroes counters
  and empties the providers' rate windows.

A real server, so workers in other processes or containers reach it as they would reach
the real thing.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .fake_database import DatabaseSwitches, FakeDatabase, TooManyConnections, UnknownConnection
from .fake_provider import FakeProvider, ProviderSwitches
from .traffic import model_answer

__all__ = ["FakeServices", "SentryCollector"]


class SentryCollector:
    """Counts the events the Sentry SDK sends, by level and by issue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def receive(self, body: bytes) -> None:
        lines = body.split(b"\n")
        found = []
        index = 1  # the envelope's own header first
        while index + 1 < len(lines):
            try:
                header = json.loads(lines[index])
                payload = json.loads(lines[index + 1]) if lines[index + 1].strip() else {}
            except ValueError:
                index += 1
                continue
            index += 2
            if header.get("type") != "event" or not isinstance(payload, dict):
                continue
            tags = payload.get("tags") or {}
            if isinstance(tags, list):
                tags = dict(pair for pair in tags if isinstance(pair, list) and len(pair) == 2)
            message = payload.get("message") or payload.get("logentry", {}).get("message")
            exception = (payload.get("exception") or {}).get("values") or [{}]
            found.append(
                {
                    "level": payload.get("level", "error"),
                    "message": message or f"{exception[-1].get('type')}: {exception[-1].get('value')}",
                    "tags": tags,
                    "fingerprint": payload.get("fingerprint"),
                    "kind": _kind(tags, exception[-1].get("type")),
                }
            )
        with self._lock:
            self.events.extend(found)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "events": len(self.events),
                "by_level": dict(Counter(e["level"] for e in self.events)),
                "by_kind": dict(Counter(e["kind"] for e in self.events)),
                # What Sentry would group into issues: the fingerprint, else the error's type.
                "issues": len({_issue(e) for e in self.events}),
                "top_issues": Counter(_title(e) for e in self.events).most_common(5),
                "recent": self.events[-20:],
            }

    def reset(self) -> None:
        with self._lock:
            self.events = []


def _kind(tags: dict[str, Any], exception: object) -> str:
    """What an event is to whoever reads Sentry: an alert (by its rule), an exhausted
    chain, an error the plugin handled (sent as a warning), or another error (by type)."""
    if tags.get("resilience.handled"):
        return f"handled {tags['resilience.handled']}"
    if tags.get("resilience.rule"):
        return f"alert {tags['resilience.rule']}"
    if tags.get("resilience.exhausted") or exception == "FallbackExhausted":
        return "exhausted chain"
    return f"error {exception}" if exception else "message"


def _issue(event: dict[str, Any]) -> str:
    fingerprint = event.get("fingerprint")
    if fingerprint:
        return "|".join(map(str, fingerprint))
    return str(event.get("message", "")).split(":", 1)[0]


def _title(event: dict[str, Any]) -> str:
    return f"{event.get('level')}: {str(event.get('message', ''))[:90]}"


class _Server(ThreadingHTTPServer):
    """A client that gave up (its timeout, a worker stopping) is part of every replay: it is
    logged, not printed with a traceback over the replay's progress."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        logging.getLogger("celery_resilience_harness.fake_services").debug(
            "request from %s ended early", client_address, exc_info=True
        )


class FakeServices:
    """The fake providers, database and Sentry behind one ``ThreadingHTTPServer``."""

    def __init__(
        self,
        providers: Mapping[str, ProviderSwitches] | None = None,
        database: DatabaseSwitches | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        names = providers or {"primary": ProviderSwitches()}
        self.providers = {
            name: FakeProvider(name, switches, seed=index + 7, answer=model_answer)
            for index, (name, switches) in enumerate(names.items())
        }
        self.database = FakeDatabase(database)
        self.sentry = SentryCollector()
        self.httpd = _Server((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"
        self._thread: threading.Thread | None = None

    def sentry_dsn(self, project: int = 1) -> str:
        return f"http://simulation@{self.url.removeprefix('http://')}/sentry/{project}"

    def start(self) -> FakeServices:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-services", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeServices:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def control(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply switches; every name is checked before anything changes."""
        providers = changes.get("providers") or {}
        unknown = (set(providers) - set(self.providers)) | (set(changes) - {"providers", "db"})
        if unknown:
            raise ValueError(f"unknown control targets: {sorted(unknown)}")
        for name, switches in providers.items():
            self.providers[name].switches.updated(switches)
        if changes.get("db"):
            self.database.switches.updated(changes["db"])
        for name, switches in providers.items():
            self.providers[name].set(**switches)
        if changes.get("db"):
            self.database.set(**changes["db"])
        return self.switches()

    def switches(self) -> dict[str, Any]:
        return {
            "providers": {name: p.stats()["switches"] for name, p in self.providers.items()},
            "db": self.database.stats()["switches"],
        }

    def stats(self) -> dict[str, Any]:
        return {
            "providers": {name: p.stats() for name, p in self.providers.items()},
            "db": self.database.stats(),
            "sentry": self.sentry.stats(),
        }

    def reset(self) -> None:
        for provider in self.providers.values():
            provider.reset()
        self.database.reset_counters()
        self.sentry.reset()


def _handler(services: FakeServices) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/_stats":
                self._send(200, services.stats())
            elif self.path == "/db/stats":
                self._send(200, services.database.stats())
            elif self.path == "/_health":
                self._send(200, {"ok": True})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            body = self._body()
            path = self.path.split("?", 1)[0]
            parts = [p for p in path.split("/") if p]
            try:
                if len(parts) == 4 and parts[1:] == ["v1", "chat", "completions"]:
                    self._complete(parts[0], body)
                elif parts and parts[0] == "db":
                    self._database(parts[1:], body)
                elif len(parts) >= 3 and parts[0] == "sentry" and parts[-1] in ("envelope", "store"):
                    services.sentry.receive(body)
                    self._send(200, {})
                elif path == "/_control":
                    self._send(200, services.control(json.loads(body or b"{}")))
                elif path == "/_reset":
                    services.reset()
                    self._send(200, {"ok": True})
                else:
                    self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            except (ValueError, TypeError) as error:
                self._send(400, {"error": {"message": str(error), "type": "invalid_request_error"}})

        def _complete(self, name: str, body: bytes) -> None:
            provider = services.providers.get(name)
            if provider is None:
                self._send(404, {"error": {"message": f"no provider {name}", "type": "not_found"}})
                return
            reply = provider.complete(json.loads(body or b"{}"))
            if reply.delay > 0:
                time.sleep(reply.delay)
            self._send(reply.status, reply.body, reply.headers)

        def _database(self, action: list[str], body: bytes) -> None:
            request = json.loads(body or b"{}")
            database = services.database
            try:
                if action == ["connect"]:
                    self._send(200, {"connection": database.connect()})
                elif action == ["query"]:
                    time.sleep(database.query_delay(int(request["connection"])))
                    self._send(200, {"ok": True})
                elif action == ["close"]:
                    database.close(int(request["connection"]))
                    self._send(200, {"ok": True})
                else:
                    self._send(404, {"error": {"message": "no such database action", "type": "not_found"}})
            except TooManyConnections as refused:
                self._send(503, {"error": {"message": str(refused), "type": "too_many_connections"}})
            except (UnknownConnection, KeyError) as error:
                self._send(409, {"error": {"message": str(error), "type": "unknown_connection"}})

        def _body(self) -> bytes:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            encoding = (self.headers.get("content-encoding") or "").lower()
            if encoding == "gzip":
                return gzip.decompress(body)
            if encoding == "deflate":
                return zlib.decompress(body)
            if encoding == "br":
                try:
                    import brotli  # type: ignore[import-not-found]
                except ImportError:
                    return b""
                return bytes(brotli.decompress(body))
            return body

        def _send(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: Any) -> None:
            return None

    return Handler
