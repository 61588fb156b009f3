"""The one clock: everything that reads time is given one, so a test can move all of it.

``now`` is the wall clock (seconds since the epoch: deadlines other processes read, ETAs,
ages); ``monotonic`` measures intervals within this process (caches, leases, retry
waits). ``testing.FakeClock`` answers both from one value that moves only when told.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back."""


class SystemClock:
    # The C functions themselves: admission reads the clock several times per publish.
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)


SYSTEM_CLOCK = SystemClock()
