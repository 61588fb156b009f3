"""The admission algorithm: a token bucket, a grace allowance, and paced reservations.

This module is the specification of one admission decision. ``MemoryStore`` runs it
directly; ``store/lua/admit.lua`` is the same arithmetic in one atomic Redis script,
and one behavioural suite holds both to the same answers.

- The bucket holds up to ``capacity`` tokens (the burst) and refills at ``refill``
  tokens per second (the possibly adapted rate). A request takes one token.
- ``reserve`` tokens are kept back from lower criticality classes: a sheddable request
  needs ``1 + reserve`` tokens, so when the bucket runs low the sheddable are refused
  while critical requests still get through.
- When the bucket is empty, up to ``grace_limit`` extra admissions are allowed per fixed
  ``grace_period`` window (a burst allowance that does not refill continuously).
- A caller may ask for a ``lease``: when the bucket can spare them, up to that many
  extra tokens are taken now, for the caller to admit its next requests locally
  without asking the store. They come out of the same bucket, so no more is admitted
  overall; only when is shifted, by at most the lease's lifetime.
- A caller holding leases may renew one with no request of its own (``renew``): the
  same spare tokens, or none; nothing is admitted or refused.
- Otherwise the request is throttled. If the caller's strategy paces work (delay or
  queue) and the wait is within ``horizon`` seconds, a future token is reserved now:
  the bucket goes into debt and the request is published to run when that token is
  due, so throttled work is paced rather than bunched, and never exceeds the rate.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = [
    "Decision",
    "BucketSpec",
    "BucketState",
    "Outcome",
    "decide",
    "renew",
    "drain",
    "refund",
    "bucket_ttl",
]


class Decision(enum.Enum):
    ALLOW = "allow"
    ALLOW_WITH_GRACE = "allow_with_grace"
    THROTTLE = "throttle"


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """The numbers that govern one decision, already adapted to current conditions."""

    capacity: float
    refill: float
    grace_limit: int
    grace_period: float
    reserve: float = 0.0
    grace_allowed: bool = True
    horizon: float = 0.0


@dataclass(slots=True)
class BucketState:
    tokens: float
    stamp: float
    grace_window: int = -1
    grace_used: int = 0


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    remaining: float
    retry_after: float
    reserved: bool
    grace_used: int
    leased: int = 0


def decide(
    state: BucketState | None, spec: BucketSpec, now: float, lease: int = 0
) -> tuple[BucketState, Outcome]:
    """One admission decision at time ``now``; returns the new state and the outcome."""
    if state is None:
        state = BucketState(tokens=spec.capacity, stamp=now)
    elapsed = max(0.0, now - state.stamp)
    tokens = min(spec.capacity, state.tokens + elapsed * spec.refill)
    stamp = max(now, state.stamp)
    window = math.floor(now / spec.grace_period)
    grace_used = state.grace_used if state.grace_window == window else 0
    need = 1.0 + spec.reserve

    if tokens >= need:
        leased = lease if lease > 0 and tokens >= need + lease else 0
        tokens -= 1.0 + leased
        outcome = Outcome(Decision.ALLOW, tokens, 0.0, False, grace_used, leased)
    elif spec.grace_allowed and grace_used < spec.grace_limit:
        grace_used += 1
        outcome = Outcome(Decision.ALLOW_WITH_GRACE, tokens, 0.0, False, grace_used)
    else:
        wait = (need - tokens) / spec.refill if spec.refill > 0 else math.inf
        reserved = spec.horizon > 0 and wait <= spec.horizon
        if reserved:
            tokens -= 1.0
        outcome = Outcome(Decision.THROTTLE, tokens, wait, reserved, grace_used)
    return BucketState(tokens, stamp, window, grace_used), outcome


def renew(state: BucketState | None, spec: BucketSpec, now: float, lease: int) -> tuple[BucketState, int]:
    """Take ``lease`` tokens for a lease when the bucket can spare them as on an allow
    (leaving a request's worth and its reserve), else none; returns the state and the
    tokens taken."""
    if state is None:
        state = BucketState(tokens=spec.capacity, stamp=now)
    tokens = min(spec.capacity, state.tokens + max(0.0, now - state.stamp) * spec.refill)
    window = math.floor(now / spec.grace_period)
    grace_used = state.grace_used if state.grace_window == window else 0
    leased = lease if lease > 0 and tokens >= 1.0 + spec.reserve + lease else 0
    return BucketState(tokens - leased, max(now, state.stamp), window, grace_used), leased


def drain(state: BucketState | None, spec: BucketSpec, now: float, seconds: float) -> BucketState:
    """Empty the bucket so its next token is due in ``seconds`` (a provider said 429)."""
    if state is None:
        state = BucketState(tokens=spec.capacity, stamp=now)
    tokens = min(spec.capacity, state.tokens + max(0.0, now - state.stamp) * spec.refill)
    tokens = min(tokens, 1.0 - spec.refill * seconds)
    return BucketState(tokens, max(now, state.stamp), state.grace_window, state.grace_used)


def refund(state: BucketState | None, spec: BucketSpec, now: float, grace: bool) -> BucketState | None:
    """Give back what an admission took when its publish failed: its grace (in the same
    window), or its token (never past a full bucket). A missing bucket is already full."""
    if state is None:
        return None
    window = math.floor(now / spec.grace_period)
    if grace:
        used = (
            state.grace_used - 1
            if state.grace_window == window and state.grace_used > 0
            else state.grace_used
        )
        return BucketState(state.tokens, state.stamp, state.grace_window, used)
    tokens = min(spec.capacity, state.tokens + max(0.0, now - state.stamp) * spec.refill + 1.0)
    return BucketState(tokens, max(now, state.stamp), state.grace_window, state.grace_used)


def bucket_ttl(state: BucketState, spec: BucketSpec) -> float:
    """Seconds after which the stored state is indistinguishable from a fresh bucket."""
    refill_time = (spec.capacity - state.tokens) / spec.refill if spec.refill > 0 else spec.grace_period
    return max(refill_time, spec.grace_period) + 1.0
