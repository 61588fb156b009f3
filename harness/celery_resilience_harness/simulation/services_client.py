"""Talks to a ``FakeServices`` server over HTTP: the same calls whether it runs in this
process or in another container."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from typing import Any

__all__ = ["ServicesClient"]


class ServicesClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:
            return json.loads(reply.read() or b"null")

    def control(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/_control", changes)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_stats")
        return result

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def db_usage(self) -> float:
        """The database's pool use alone: cheaper than ``stats`` for a sampler."""
        return float(self._call("GET", "/db/stats")["usage"])

    def sentry_dsn(self, project: int = 1) -> str:
        return f"http://simulation@{self.url.removeprefix('http://')}/sentry/{project}"
