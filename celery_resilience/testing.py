"""Helpers for testing code that uses the plugin: a clock you move by hand."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told; pass it as ``clock=`` to ``Resilience`` (or a store).

    It answers both the wall clock (``now()``, or calling it) and the monotonic one from the
    same value, so every deadline, cache and lease of the plugin moves with ``advance``.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.now()

    def __call__(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds
