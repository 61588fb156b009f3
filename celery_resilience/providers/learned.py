"""A budget learned from the provider's answers, for a unit whose limit nobody wrote down.

A pipeline rarely knows its tier's limits, and they change (a new tier, another service
on the same key). A learned unit starts from a guess and steers by what the provider
says, shared by every worker through the store:

- a response stating the unit's limit (``x-ratelimit-limit-tokens``,
  ``anthropic-ratelimit-*-limit``) sets it outright: the provider is the ground truth,
  and a stated rate is neither cut by a 429 (the window was full, the limit is what the
  provider said; the budget's window drains as the 429 says) nor grown past;
- otherwise by what the provider refuses, as TCP finds a link's capacity: a 429 cuts the
  rate to the limit the budget's window shows. While the rate was probing past its last
  cut, that is what the window held when the provider refused (the provider took all of
  it: the limit has not moved, the probe passed it). Otherwise the limit may have fallen
  under calls the provider took before: with the 429's ``retry-after``, it is what the
  window will still hold when the provider takes a call again, plus one call; without
  it, what the window held. When that is no lower than the rate, the cut is to
  ``DECREASE`` of itself. At most once per ``COOL_DOWN`` (the 429s of calls already in
  flight say the same thing again), except that a 429 meeting a window that held less
  lowers it to that;
- while the budget is what holds calls back (it refuses them, or they succeed after
  waiting), a unit never cut grows as TCP's slow start does, by ``SLOW_START`` of itself
  per second (a guess may be far below the limit, and only a 429 says where it is);
  after a cut the rate grows back towards the rate at the last cut by ``INCREASE`` of it
  per second, and past it (the limit may have risen) along CUBIC's curve: ``PROBE`` of
  the last cut's rate times the cube of the seconds spent probing, no faster than
  ``PROBE_TOP`` of itself per second. The curve is flat near the limit just found,
  where a 429 is slow to come (the window fills to a higher rate only as calls replace
  the oldest), and steep once the limit has held a while. For ``QUIET`` seconds after a
  cut it does not grow: the calls held back then were held by the 429's drain.

Each process keeps the rate for ``REFRESH`` seconds and shares what it learns at once:
every worker follows a cut within that time. ``store/lua/learn.lua`` is the same
arithmetic as ``learned``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Clock
from ..errors import StoreUnavailable
from .port import ProviderStore

__all__ = [
    "COOL_DOWN",
    "DECREASE",
    "INCREASE",
    "PROBE",
    "PROBE_TOP",
    "QUIET",
    "SLOW_START",
    "LearnedRate",
    "LearnedRates",
    "learned",
]

logger = logging.getLogger("celery_resilience.learned")

INCREASE = 0.05  # of the rate at the last cut, per second of success while held back
DECREASE = 0.8  # kept of the rate on a 429
# Probing past the rate at the last cut: that rate times 1 + PROBE * (seconds probing)^3,
# about +2 % after 2 s, +16 % after 4 s, +86 % after 7 s.
PROBE = 0.0025
PROBE_TOP = 0.25  # the fastest probing, of the rate per second
COOL_DOWN = 0.5  # seconds between two cuts
QUIET = 1.0  # seconds after a cut without growth
SLOW_START = 0.7  # of the rate, per second of growth before the first cut: about twice a second
REFRESH = 0.5  # seconds a process keeps the shared rate
GROW_EVERY = 0.2  # seconds between two growth reports from one process
FLOOR = 0.01  # the lowest rate, as a share of the starting guess

GROW, CUT, SET, READ = "grow", "cut", "set", "read"


@dataclass(frozen=True, slots=True)
class LearnedRate:
    """A unit's learned rate per second, the rate at its last cut, and when it last changed."""

    rate: float
    ceiling: float
    grown_at: float
    cut_at: float
    stated: bool = False


def learned(
    state: LearnedRate | None,
    event: str,
    now: float,
    start: float,
    value: float = 0.0,
    accepted: float = 0.0,
    held: float = 0.0,
) -> LearnedRate:
    """The rate after ``event``: ``grow`` (calls succeeded while held back), ``cut`` (a 429
    that drained the budget for ``value`` seconds, when the window showed a limit of
    ``accepted`` per second and held ``held`` per second), ``set`` (the provider stated
    ``value`` per second) or ``read``."""
    current = state or LearnedRate(start, start, now, 0.0)
    if event == SET and value > 0:
        return LearnedRate(value, value, now, current.cut_at, stated=True)
    if current.stated:  # the provider's word stands until it says otherwise
        return current
    if event == CUT:  # ``value``: how long the 429 drained the budget
        if now - current.cut_at < COOL_DOWN:
            # Another 429 of the same episode: nothing new, unless the window it met held
            # less than the rate (the provider's limit is below what is left of it).
            if not 0 < held < current.rate:
                return current
            rate = max(start * FLOOR, held)
            return LearnedRate(rate, min(current.ceiling, rate), current.grown_at, current.cut_at)
        if current.cut_at > 0 and current.rate > current.ceiling and 0 < held < current.rate:
            accepted = held  # probing past the last cut found the limit it had not moved from
        measured = 0 < accepted < current.rate
        # What the window held when the provider refused is the limit, within one call's
        # cost; without it, the multiplicative cut. Growth starts near it, gently.
        rate = max(start * FLOOR, accepted if measured else current.rate * DECREASE)
        ceiling = rate if measured else current.rate
        # The cut counts from the drain's end: no second cut, and no growth, before then.
        return LearnedRate(rate, ceiling, now, now + max(0.0, value))
    if event == GROW:
        elapsed = min(1.0, max(0.0, now - current.grown_at))
        if now - current.cut_at < QUIET:
            elapsed = 0.0
        if current.cut_at == 0.0:
            rate = current.rate * (1.0 + SLOW_START * elapsed)
        elif current.rate < current.ceiling:
            rate = min(current.ceiling, current.rate + INCREASE * current.ceiling * elapsed)
        else:
            # Where the rate is on the curve (its seconds of probing), then ``elapsed`` on.
            probed = (max(0.0, current.rate / current.ceiling - 1.0) / PROBE) ** (1.0 / 3.0)
            rate = min(
                current.ceiling * (1.0 + PROBE * (probed + elapsed) ** 3),
                current.rate * (1.0 + PROBE_TOP * elapsed),
            )
        return LearnedRate(rate, current.ceiling, now, current.cut_at)
    return current


class LearnedRates:
    """The runtime side: each process's copy of the shared rates, and what it reports."""

    def __init__(self, store: Callable[[], ProviderStore], clock: Clock) -> None:
        self._store, self._clock = store, clock
        self._rates: dict[tuple[str, str], tuple[float, float]] = {}  # -> (rate, read at)
        self._grown: dict[tuple[str, str], float] = {}
        self._stated: set[tuple[str, str]] = set()  # units whose limit a response stated here
        self._lock = threading.Lock()

    def rate(self, provider: str, unit: str, start: float) -> float:
        """The unit's rate per second, from this process's copy while it is fresh."""
        with self._lock:
            known = self._rates.get((provider, unit))
        if known is not None and self._clock.monotonic() - known[1] < REFRESH:
            return known[0]
        return self._send(provider, unit, READ, start, 0.0, fallback=known[0] if known else start)

    def is_stated(self, provider: str, unit: str) -> bool:
        """Whether a response to this process stated the unit's limit (it is no longer found by 429s)."""
        with self._lock:
            return (provider, unit) in self._stated

    def grew(self, provider: str, unit: str, start: float) -> None:
        """A call succeeded while the unit held calls back: report it, at most every ``GROW_EVERY``."""
        now = self._clock.monotonic()
        with self._lock:
            if now - self._grown.get((provider, unit), -GROW_EVERY) < GROW_EVERY:
                return
            self._grown[(provider, unit)] = now
        self._send(provider, unit, GROW, start, 0.0)

    def cut(
        self, provider: str, unit: str, start: float, drained: float, accepted: float = 0.0, held: float = 0.0
    ) -> None:
        self._send(provider, unit, CUT, start, drained, accepted=accepted, held=held)

    def stated(self, provider: str, unit: str, start: float, per_second: float) -> None:
        """The provider stated the unit's limit; only a change is sent."""
        with self._lock:
            self._stated.add((provider, unit))
            known = self._rates.get((provider, unit))
        if known is not None and abs(known[0] - per_second) <= per_second * 1e-6:
            return
        self._send(provider, unit, SET, start, per_second)

    def _send(
        self,
        provider: str,
        unit: str,
        event: str,
        start: float,
        value: float,
        fallback: float = 0.0,
        accepted: float = 0.0,
        held: float = 0.0,
    ) -> float:
        try:
            rate = self._store().learn(provider, unit, event, start, value, accepted, held)
        except StoreUnavailable as error:
            logger.warning("learned %s budget of %r not shared: %s", unit, provider, error)
            with self._lock:
                known = self._rates.get((provider, unit))
            return known[0] if known else (fallback or start)
        with self._lock:
            self._rates[(provider, unit)] = (rate, self._clock.monotonic())
        return rate
