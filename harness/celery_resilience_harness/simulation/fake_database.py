"""A fake database: a server with a fixed number of connections, shared by every worker.

The reference's database died of its connection pool: 200 connections, all taken. This
one has ``max_connections``; a client that cannot get one within ``acquire_timeout`` is
refused ("too many connections"). Queries slow down as the pool fills, the way a
database under contention does, and ``held_by_others`` lets a scenario take connections
away (a batch job, another service: the connection spike).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["DatabaseSwitches", "FakeDatabase", "TooManyConnections", "UnknownConnection"]


class TooManyConnections(Exception):
    """No connection came free within the acquire timeout."""


class UnknownConnection(Exception):
    """The connection was closed, or reaped after ``idle_timeout``."""


@dataclass(frozen=True)
class DatabaseSwitches:
    max_connections: int = 200
    held_by_others: int = 0
    acquire_timeout: float = 1.0
    query_time: float = 0.01
    idle_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or not 0 <= self.held_by_others <= self.max_connections:
            raise ValueError("need max_connections >= 1 and 0 <= held_by_others <= max_connections")
        if self.acquire_timeout < 0 or self.query_time < 0 or self.idle_timeout <= 0:
            raise ValueError("timeouts and query_time must be >= 0 (idle_timeout > 0)")

    def updated(self, changes: Mapping[str, Any]) -> DatabaseSwitches:
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown database switches: {sorted(unknown)}")
        return replace(self, **dict(changes))


class FakeDatabase:
    def __init__(
        self, switches: DatabaseSwitches | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.switches = switches or DatabaseSwitches()
        self._clock = clock
        self._condition = threading.Condition()
        self._open: dict[int, float] = {}  # connection id -> last used
        self._ids = itertools.count(1)
        self._waiting = 0
        self._peak = 0
        self._counts: Counter[str] = Counter()
        self._timeline: Counter[tuple[int, str]] = Counter()
        self._started = clock()

    def set(self, **changes: Any) -> DatabaseSwitches:
        with self._condition:
            self.switches = self.switches.updated(changes)
            self._condition.notify_all()
            return self.switches

    def reset_counters(self) -> None:
        with self._condition:
            self._counts = Counter()
            self._timeline = Counter()
            self._peak = len(self._open)
            self._started = self._clock()

    def in_use(self) -> int:
        with self._condition:
            return len(self._open) + self.switches.held_by_others

    def stats(self) -> dict[str, Any]:
        with self._condition:
            self._reap(self._clock())
            return {
                "in_use": len(self._open) + self.switches.held_by_others,
                "max": self.switches.max_connections,
                "usage": (len(self._open) + self.switches.held_by_others) / self.switches.max_connections,
                "waiting": self._waiting,
                "peak": self._peak,
                "counts": dict(self._counts),
                "timeline": [[second, what, n] for (second, what), n in sorted(self._timeline.items())],
                "switches": asdict(self.switches),
            }

    def connect(self) -> int:
        """A connection id, waiting up to ``acquire_timeout`` for one to come free."""
        with self._condition:
            deadline = self._clock() + self.switches.acquire_timeout
            self._waiting += 1
            try:
                while True:
                    now = self._clock()
                    self._reap(now)
                    if len(self._open) + self.switches.held_by_others < self.switches.max_connections:
                        connection = next(self._ids)
                        self._open[connection] = now
                        self._peak = max(self._peak, len(self._open) + self.switches.held_by_others)
                        self._count("connected", now)
                        return connection
                    if now >= deadline:
                        self._count("refused", now)
                        raise TooManyConnections(
                            f"too many connections ({self.switches.max_connections} in use)"
                        )
                    self._condition.wait(min(deadline - now, 0.05))
            finally:
                self._waiting -= 1

    def query_delay(self, connection: int) -> float:
        """How long the query takes now: ``query_time``, slower as the pool fills."""
        with self._condition:
            now = self._clock()
            if connection not in self._open:
                raise UnknownConnection(f"connection {connection} is not open")
            self._open[connection] = now
            self._count("queries", now)
            use = (len(self._open) + self.switches.held_by_others) / self.switches.max_connections
            return self.switches.query_time / max(0.1, 1.0 - 0.9 * use)

    def close(self, connection: int) -> None:
        with self._condition:
            if self._open.pop(connection, None) is not None:
                self._condition.notify()

    def _reap(self, now: float) -> None:
        idle = [c for c, used in self._open.items() if now - used > self.switches.idle_timeout]
        for connection in idle:
            del self._open[connection]
            self._count("reaped", now)
        if idle:
            self._condition.notify_all()

    def _count(self, what: str, now: float) -> None:
        self._counts[what] += 1
        self._timeline[(int(now - self._started), what)] += 1
