"""A provider's budget in several units: requests, and tokens (in total, or input and
output apart), each over its own period, all shared by every worker.

Providers count each unit over a sliding window: a call counts from when it arrives
until a period later, at its reserved cost until it is answered, then at what it used.
The budget keeps the same ledger. Each unit is a window of reservations (when each was
made, what it costs now); a call is admitted when the window's sum plus its cost fits
the count, so any window of the period holds up to the count, whatever the output cap,
and never more. A reservation counts for the period stretched by ``WINDOW_MARGIN`` (and
at least ``WINDOW_SLACK`` seconds), so that a call admitted at the edge of a window and
arriving a little later (network, a worker's first connection, scheduling) is still
counted when the provider counts it.

A call takes from every unit at once or from none (``take_all``): a call refused for
tokens has not spent a request. What a call took is an estimate; ``settle`` sets it to
what the provider counted. A 429 fills the window until the wait the provider named
(``block``); headers that say less is left than the window thinks hold the difference
(``hold_to``).

Queued calls book their turn at enqueue on a timetable of their own: a bucket per unit
that may go into debt (``schedule``), refilled at the count per stretched period.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from ..admission.bucket import BucketSpec, BucketState
from ..rates import Rate

__all__ = [
    "AHEAD_SHARE",
    "BLOCKED",
    "HELD",
    "INPUT_TOKENS",
    "OUTPUT_TOKENS",
    "REQUESTS",
    "TOKENS",
    "UNITS",
    "WINDOW_MARGIN",
    "WINDOW_SLACK",
    "Ledger",
    "ProviderBudget",
    "Said",
    "UnitBudget",
    "Window",
    "adjust",
    "block",
    "hold_to",
    "refilled",
    "running_ahead",
    "lead",
    "Taken",
    "schedule",
    "settle",
    "stretched",
    "take_all",
]

REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS = "requests", "tokens", "input_tokens", "output_tokens"
UNITS = (REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS)

# Share by which each unit's period is stretched, for calls that reach the provider a
# little later than they were admitted.
WINDOW_MARGIN = 0.02
WINDOW_SLACK = 0.5

# A window is spent faster than its rate when more than this share of its count was
# taken in the last same share of its span (``running_ahead``).
AHEAD_SHARE = 0.25

# Entries that are not calls: a 429's wait, and what the headers say is gone. Call ids
# are hexadecimal, so neither can collide with one.
BLOCKED, HELD = "~blocked", "~held"


def stretched(period: float) -> float:
    """How long a reservation counts: the provider's period, with room for arrival jitter."""
    return period + max(period * WINDOW_MARGIN, WINDOW_SLACK)


@dataclass(frozen=True, slots=True)
class Window:
    """A unit as the store keeps it: up to ``count`` within any ``span`` seconds."""

    count: float
    span: float

    def timetable(self) -> BucketSpec:
        """The bucket queued calls book their turn on: a window's count, refilled over the span."""
        return BucketSpec(
            capacity=self.count,
            refill=self.count / self.span,
            grace_limit=0,
            grace_period=self.span,
            grace_allowed=False,
        )


@dataclass(frozen=True, slots=True)
class UnitBudget:
    """``rate`` of one unit per period: the provider's count per its window."""

    rate: Rate
    # Learned from the provider's answers (``providers/learned.py``); ``rate`` is the guess
    # it starts from.
    learned: bool = False

    def at(self, per_second: float) -> UnitBudget:
        """The same unit at a learned rate."""
        return UnitBudget(Rate(max(1.0, per_second * self.rate.period), self.rate.period), self.learned)

    def window(self) -> Window:
        return Window(self.rate.count, stretched(self.rate.period))


@dataclass(frozen=True, slots=True)
class ProviderBudget:
    """The units a provider counts, in the order they are taken."""

    units: tuple[tuple[str, UnitBudget], ...]

    def unit(self, name: str) -> UnitBudget | None:
        return next((budget for unit, budget in self.units if unit == name), None)


@dataclass(frozen=True, slots=True)
class Said:
    """What the provider said of one unit after a call: what it counted for the call (None:
    nothing to settle), what is left and the seconds until its reset (None: not said)."""

    counted: float | None = None
    left: float | None = None
    reset: float | None = None


@dataclass(slots=True)
class Ledger:
    """One unit's reservations: ``(at, id)`` in time order, each id's cost, and their sum.
    ``store/lua/budget.lua`` keeps the same as a sorted set, a hash and a sum."""

    entries: list[tuple[float, str]] = field(default_factory=list)
    costs: dict[str, float] = field(default_factory=dict)
    total: float = 0.0

    def add(self, at: float, entry: str, cost: float) -> None:
        self.remove(entry)
        bisect.insort(self.entries, (at, entry))
        self.costs[entry] = cost
        self.total += cost

    def remove(self, entry: str) -> None:
        cost = self.costs.pop(entry, None)
        if cost is None:
            return
        self.entries = [item for item in self.entries if item[1] != entry]
        self.total -= cost

    def expire(self, now: float, span: float) -> None:
        """Forget what no longer counts: reservations made ``span`` or more seconds ago."""
        cut = bisect.bisect_right(self.entries, (now - span, "\uffff"))
        for _, entry in self.entries[:cut]:
            self.total -= self.costs.pop(entry)
        del self.entries[:cut]
        if not self.entries:
            self.total = 0.0  # no float drift survives an empty window

    def wait_for(self, amount: float, window: Window, now: float) -> float:
        """Seconds until ``amount`` fits (0.0: now), as the oldest reservations leave."""
        excess = self.total + amount - window.count
        if excess <= 0:
            return 0.0
        freed = 0.0
        for at, entry in self.entries:
            freed += self.costs[entry]
            if freed >= excess:
                return max(0.0, at + window.span - now)
        return window.span  # not reached while amount <= count


def take_all(
    ledgers: Sequence[Ledger],
    windows: Sequence[Window],
    amounts: Sequence[float],
    entry: str,
    now: float,
    watch: bool = False,
) -> Taken:
    """Reserve ``amounts[i]`` in ledger ``i`` under ``entry``, in all of them or none.
    Returns ``Taken(0.0, ahead, lead, lead_for)`` when taken (``ahead``: with ``watch``,
    some unit is ``running_ahead``; then the unit's ``lead`` that is most), else
    ``Taken(seconds until every amount fits)``. An amount above a unit's count is taken as
    the whole count (it could never be granted otherwise)."""
    wait = 0.0
    for ledger, window, amount in zip(ledgers, windows, amounts, strict=True):
        ledger.expire(now, window.span)
        wait = max(wait, ledger.wait_for(min(amount, window.count), window, now))
    if wait > 0:
        return Taken(wait)
    taken = [min(amount, window.count) for amount, window in zip(amounts, windows, strict=True)]
    for ledger, amount in zip(ledgers, taken, strict=True):
        ledger.add(now, entry, amount)
    units = list(zip(ledgers, windows, taken, strict=True))
    if not (watch and any(running_ahead(ledger, window, now) for ledger, window, _ in units)):
        return Taken(0.0)
    return Taken(0.0, True, *max(lead(ledger, window, now, amount) for ledger, window, amount in units))


class Taken(NamedTuple):
    wait: float
    """Seconds until every amount fits (0: taken)."""
    ahead: bool = False
    """Some unit is ``running_ahead``."""
    lead: float = 0.0
    """Then the calls its window holds beyond its rate (``lead``) ..."""
    lead_for: float = 0.0
    """... for this many seconds more, until the oldest of them leaves it."""


def lead(ledger: Ledger, window: Window, now: float, amount: float) -> tuple[float, float]:
    """How many calls of ``amount`` the window holds beyond what its rate allowed since its
    oldest entry, and the seconds until that entry leaves it: what a flood took before a
    budget's tenants took turns (``providers/turns.py`` runs their clock slower by it,
    which would otherwise fill the window ahead of its rate and find it full until those
    calls leave it)."""
    if not ledger.entries or amount <= 0:
        return 0.0, 0.0
    oldest = ledger.entries[0][0]
    since = min(1.0, (now - oldest) / window.span)
    return max(0.0, (ledger.total - window.count * since) / amount), max(0.0, oldest + window.span - now)


def running_ahead(ledger: Ledger, window: Window, now: float) -> bool:
    """Whether the window is being spent faster than its count per span: more than
    ``AHEAD_SHARE`` of the count taken in the last ``AHEAD_SHARE`` of the span. A burst
    below that share passes as the window allows; a flood is seen before the window is
    full, while there is still budget to share fairly (``providers/fair_share.py``)."""
    share = AHEAD_SHARE * window.count
    if ledger.total <= share:
        return False
    since = now - AHEAD_SHARE * window.span
    start = bisect.bisect_right(ledger.entries, (since, "\uffff"))
    return sum(ledger.costs[entry] for _, entry in ledger.entries[start:]) > share


def settle(ledger: Ledger, entry: str, cost: float) -> None:
    """The provider counted ``cost`` for the call: it counts that until it leaves the window
    (a reservation that already left stays gone)."""
    if entry in ledger.costs:
        ledger.total += cost - ledger.costs[entry]
        ledger.costs[entry] = cost


def block(
    ledger: Ledger,
    window: Window,
    now: float,
    seconds: float,
    again: float | None = None,
    period: float | None = None,
) -> tuple[float, float]:
    """A 429: nothing fits for ``seconds``. Returns what the provider had accepted when it
    refused (the calls of its last ``period``, by default the window's span), and what
    the window shows of its limit: the calls it will still count when it takes a call
    again (in ``again`` seconds, by default when the wait ends), plus one call of their
    mean cost (the provider takes that call then and refused it now)."""
    ledger.expire(now, window.span)
    counted = window.span if period is None else period
    calls = [(at, entry) for at, entry in ledger.entries if entry not in (BLOCKED, HELD)]
    total = ledger.total - ledger.costs.get(BLOCKED, 0.0) - ledger.costs.get(HELD, 0.0)
    before = sum(ledger.costs[entry] for at, entry in calls if at > now - counted)
    ahead = seconds if again is None else again
    staying = sum(ledger.costs[entry] for at, entry in calls if at > now + ahead - counted)
    limit = staying + (total / len(calls) if calls else 0.0)
    ends = now + seconds - window.span
    previous = next((at for at, entry in ledger.entries if entry == BLOCKED), None)
    ledger.add(max(ends, previous if previous is not None else ends), BLOCKED, window.count)
    return max(0.0, before), max(0.0, limit)


def hold_to(ledger: Ledger, window: Window, now: float, left: float, reset: float | None) -> None:
    """The provider says only ``left`` is left (another client on the key, an estimate
    short of its count): with nothing left, nothing fits until its reset; else the window
    holds the difference until then."""
    ends_in = min(reset, window.span) if reset is not None else window.span
    if left < 1:
        block(ledger, window, now, ends_in)
        return
    ledger.expire(now, window.span)
    gone = ledger.total + left - window.count  # negative: the window thinks more is left
    if gone >= 0:
        return
    held = ledger.costs.get(HELD, 0.0) - gone
    ledger.add(now + ends_in - window.span, HELD, min(held, window.count))


def refilled(state: BucketState | None, spec: BucketSpec, now: float) -> BucketState:
    """A timetable bucket as it stands at ``now`` (a missing one is full)."""
    if state is None:
        return BucketState(tokens=spec.capacity, stamp=now)
    tokens = min(spec.capacity, state.tokens + max(0.0, now - state.stamp) * spec.refill)
    return BucketState(tokens, max(now, state.stamp), state.grace_window, state.grace_used)


def adjust(state: BucketState | None, spec: BucketSpec, now: float, delta: float) -> BucketState:
    """Give ``delta`` back to a timetable bucket (or, negative, take it): never past full."""
    current = refilled(state, spec, now)
    tokens = min(spec.capacity, current.tokens + delta)
    return BucketState(tokens, current.stamp, current.grace_window, current.grace_used)


def schedule(
    states: Sequence[BucketState | None],
    specs: Sequence[BucketSpec],
    amounts: Sequence[float],
    now: float,
    horizon: float,
) -> tuple[list[BucketState], float, bool]:
    """Book a queued call's cost on the provider's timetable: each unit's bucket may go into
    debt, and the debt says when the call's turn comes. Returns the new states, the wait
    until that turn, and whether it is within ``horizon`` (if not, nothing is booked).
    ``store/lua/schedule.lua`` is the same arithmetic."""
    current = [refilled(state, spec, now) for state, spec in zip(states, specs, strict=True)]
    wait = 0.0
    for state, spec, amount in zip(current, specs, amounts, strict=True):
        after = state.tokens - amount
        if after < 0:
            wait = max(wait, -after / spec.refill if spec.refill > 0 else math.inf)
    if wait > horizon:
        return current, wait, False
    return (
        [
            BucketState(state.tokens - amount, state.stamp, state.grace_window, state.grace_used)
            for state, amount in zip(current, amounts, strict=True)
        ],
        wait,
        True,
    )
