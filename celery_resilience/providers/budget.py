"""A provider's budget in several units: requests, and tokens (in total, or input and
output apart), each over its own period, all shared by every worker.

Providers count in their own sliding windows, so the budget must keep *every* window of
the period within the count, not just the average. A bucket holding the whole period's
count lets twice the count through in the first period (the full bucket, then its
refill). So each unit is a bucket of a small ``burst`` (a tenth of the count by default)
refilled at ``(count - burst)`` per period: over any window of the period at most
``burst + (count - burst) = count`` goes out. The period is stretched by
``WINDOW_MARGIN`` (and at least ``WINDOW_SLACK`` seconds) so that calls admitted at the
edges of a window and arriving a little late or early (network, a worker's first
connection, scheduling) still fall inside the provider's count.

A call takes from every unit at once or from none (``take_all``): a call refused for
tokens has not spent a request. What a call took is an estimate; ``adjust`` gives back
the difference from what the provider counted (or takes the excess, leaving the bucket
in debt, so that later calls wait for it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..admission.bucket import BucketSpec, BucketState
from ..rates import Rate

__all__ = [
    "INPUT_TOKENS",
    "OUTPUT_TOKENS",
    "REQUESTS",
    "TOKENS",
    "UNITS",
    "WINDOW_MARGIN",
    "WINDOW_SLACK",
    "ProviderBudget",
    "UnitBudget",
    "adjust",
    "cap",
    "default_burst",
    "refilled",
    "schedule",
    "stretched",
    "take_all",
]

REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS = "requests", "tokens", "input_tokens", "output_tokens"
UNITS = (REQUESTS, TOKENS, INPUT_TOKENS, OUTPUT_TOKENS)

# Share by which each unit's period is stretched, for calls that reach the provider a
# little later or earlier than they were admitted.
WINDOW_MARGIN = 0.02
WINDOW_SLACK = 0.5


def stretched(period: float) -> float:
    """The period a unit's bucket refills over: the provider's, with room for arrival jitter."""
    return period + max(period * WINDOW_MARGIN, WINDOW_SLACK)


def default_burst(count: float) -> int:
    """A tenth of the period's count, at least one, and always less than the count (a
    burst of the whole count would leave nothing to refill within the window)."""
    if count <= 1:
        return 1
    return max(1, min(math.ceil(count) - 1, math.ceil(count / 10)))


@dataclass(frozen=True, slots=True)
class UnitBudget:
    """``rate`` of one unit per period, of which ``burst`` may go out at once."""

    rate: Rate
    burst: int
    # Learned from the provider's answers (``providers/learned.py``); ``rate`` is the guess
    # it starts from.
    learned: bool = False

    def at(self, per_second: float) -> UnitBudget:
        """The same unit at a learned rate, with the default burst for it."""
        count = max(1.0, per_second * self.rate.period)
        return UnitBudget(Rate(count, self.rate.period), default_burst(count), self.learned)

    def spec(self) -> BucketSpec:
        period = stretched(self.rate.period)
        # A count of one per period: the next is due a full (stretched) period after it.
        refill = (self.rate.count - self.burst if self.rate.count > self.burst else self.rate.count) / period
        return BucketSpec(
            capacity=self.burst,
            refill=refill,
            grace_limit=0,
            grace_period=self.rate.period,
            grace_allowed=False,
        )


@dataclass(frozen=True, slots=True)
class ProviderBudget:
    """The units a provider counts, in the order they are taken."""

    units: tuple[tuple[str, UnitBudget], ...]

    def unit(self, name: str) -> UnitBudget | None:
        return next((budget for unit, budget in self.units if unit == name), None)


def refilled(state: BucketState | None, spec: BucketSpec, now: float) -> BucketState:
    """The bucket as it stands at ``now`` (a missing one is full)."""
    if state is None:
        return BucketState(tokens=spec.capacity, stamp=now)
    tokens = min(spec.capacity, state.tokens + max(0.0, now - state.stamp) * spec.refill)
    return BucketState(tokens, max(now, state.stamp), state.grace_window, state.grace_used)


def take_all(
    states: Sequence[BucketState | None],
    specs: Sequence[BucketSpec],
    amounts: Sequence[float],
    now: float,
) -> tuple[list[BucketState], float]:
    """Take ``amounts[i]`` from bucket ``i``, from all of them or none. Returns the new
    states and 0.0, or the unchanged (refilled) states and the seconds until every
    bucket holds its amount. ``store/lua/budget.lua`` is the same arithmetic."""
    current = [refilled(state, spec, now) for state, spec in zip(states, specs, strict=True)]
    wait = 0.0
    for state, spec, amount in zip(current, specs, amounts, strict=True):
        if state.tokens < amount:
            wait = max(wait, (amount - state.tokens) / spec.refill if spec.refill > 0 else math.inf)
    if wait > 0:
        return current, wait
    return [
        BucketState(state.tokens - amount, state.stamp, state.grace_window, state.grace_used)
        for state, amount in zip(current, amounts, strict=True)
    ], 0.0


def adjust(state: BucketState | None, spec: BucketSpec, now: float, delta: float) -> BucketState:
    """Give ``delta`` back (or, negative, take it): never past a full bucket, and into
    debt when the provider counted more than was taken."""
    current = refilled(state, spec, now)
    tokens = min(spec.capacity, current.tokens + delta)
    return BucketState(tokens, current.stamp, current.grace_window, current.grace_used)


def cap(state: BucketState | None, spec: BucketSpec, now: float, most: float) -> BucketState:
    """Hold no more than ``most``: the provider says that is all that is left."""
    current = refilled(state, spec, now)
    return BucketState(min(current.tokens, most), current.stamp, current.grace_window, current.grace_used)


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
