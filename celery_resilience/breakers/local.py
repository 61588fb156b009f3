"""Breakers held in one process: the state machine under one lock.

The embedded ``MemoryStore`` keeps its breakers here, and a process whose shared store
does not answer falls back to one of these with the same policies until it answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from .machine import (
    BreakerData,
    BreakerPolicy,
    BreakerState,
    BreakerView,
    Denied,
    Permit,
    Recorded,
    acquire,
    force,
    record,
    release,
    view,
)
from .port import BreakerOutcome, TransitionListener

__all__ = ["LocalBreakers"]


class LocalBreakers:
    """A ``BreakerStore`` in memory; transitions reach listeners in this process only."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._breakers: dict[str, BreakerData] = {}
        self._listeners: list[TransitionListener] = []

    def now(self) -> float:
        return self._now()

    def breaker_acquire(
        self, name: str, policy: BreakerPolicy, lease: str
    ) -> tuple[Permit | Denied, BreakerView]:
        with self._lock:
            data = self._breakers.setdefault(name, BreakerData())
            before = (data.state, data.generation)
            now = self._now()
            result = acquire(data, policy, now, lease)
            current = view(data, policy, now)
        self._announce(name, current, before)
        return result, current

    def breaker_record(self, name: str, policy: BreakerPolicy, outcome: BreakerOutcome) -> Recorded:
        with self._lock:
            data = self._breakers.setdefault(name, BreakerData())
            before = (data.state, data.generation)
            now = self._now()
            result = record(
                data,
                policy,
                now,
                outcome.generation,
                outcome.lease,
                outcome.weight,
                outcome.retry_after,
                outcome.trip_now,
                outcome.jitter_draw,
                outcome.calls,
            )
            current = view(data, policy, now)
        self._announce(name, current, before)
        return result

    def breaker_release(self, name: str, policy: BreakerPolicy, generation: int, lease: str) -> None:
        with self._lock:
            release(self._breakers.setdefault(name, BreakerData()), generation, lease)

    def breaker_force(self, name: str, policy: BreakerPolicy, state: BreakerState) -> BreakerView:
        with self._lock:
            data = self._breakers.setdefault(name, BreakerData())
            before = (data.state, data.generation)
            force(data, state)
            current = view(data, policy, self._now())
        self._announce(name, current, before)
        return current

    def breaker_read(self, name: str, policy: BreakerPolicy) -> BreakerView:
        with self._lock:
            return view(self._breakers.setdefault(name, BreakerData()), policy, self._now())

    def subscribe(self, listener: TransitionListener, breakers: Iterable[str]) -> None:
        """Every transition of this process reaches ``listener``, whichever ``breakers`` it names."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def clear(self) -> int:
        with self._lock:
            count = len(self._breakers)
            self._breakers.clear()
            return count

    def _announce(self, name: str, current: BreakerView, before: tuple[BreakerState, int]) -> None:
        if (current.state, current.generation) != before:
            for listener in list(self._listeners):
                listener(name, current)
