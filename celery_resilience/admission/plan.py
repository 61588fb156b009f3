"""What one decision needs, worked out from the settings once per situation: pure.

A ``Plan`` is the bucket's numbers and the strategy for one severity, tier, request type,
adaptive multiplier and refusability; admission caches it, so that the hot path is one
dictionary lookup instead of rebuilding it per publish.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ..load.signals import Severity
from ..rates import Rate
from .bucket import BucketSpec
from .port import AdmitPolicy
from .settings import AdmissionSettings, Limit, TierPolicy
from .strategies import Criticality, Strategy, StrategyKind

__all__ = ["CallContext", "Plan", "make_plan", "limit_text"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is asking and for what; travels to the worker in the message headers."""

    user_id: str | None
    tier: str
    request_type: str
    criticality: Criticality

    def header(self, decision: str) -> dict[str, str | None]:
        """The message header: this context and what admission decided."""
        return {
            "user_id": self.user_id,
            "tier": self.tier,
            "request_type": self.request_type,
            "decision": decision,
        }


class Plan(NamedTuple):
    strategy: Strategy
    policy: AdmitPolicy
    limit: Limit
    own_bucket: bool  # the request type has a limit, hence a bucket, of its own


def make_plan(
    settings: AdmissionSettings,
    severity: Severity,
    tier: TierPolicy,
    ctx: CallContext,
    multiplier: float,
    refusable: bool,
) -> Plan:
    """The strategy, bucket and lease for a publish. ``refusable=False`` is for a publish
    that must go out (the rest of a group whose first members are published): over the
    limit it is paced at its slot, however far."""
    strategy = settings.strategies.choose(severity, ctx.tier, ctx.request_type, ctx.criticality)
    horizon = settings.max_throttle_delay
    if not refusable:
        horizon = math.inf
        if not strategy.kind.paces:
            strategy = Strategy(StrategyKind.DELAY, 0.0)
    limit, own_bucket = tier.limit_for(ctx.request_type)
    base = limit.rate.per_second
    refill = base * multiplier
    if tier.minimum_guaranteed is not None:
        refill = max(refill, tier.minimum_guaranteed.per_second)
    if tier.maximum_burst is not None:
        refill = min(refill, tier.maximum_burst.per_second)
    # The burst shrinks with the rate: under load a full bucket would otherwise let every
    # user through a short spike untouched. Never below one call, so the tier still serves.
    scale = min(1.0, refill / base) if base > 0 else 1.0
    capacity = max(1.0, limit.burst * scale)
    spec = BucketSpec(
        capacity=capacity,
        refill=refill,
        grace_limit=limit.grace,
        grace_period=limit.grace_period,
        # Never more than a full bucket can spare: a full bucket admits every class.
        reserve=min(settings.criticality_reserve[ctx.criticality] * capacity, capacity - 1.0),
        grace_allowed=not ctx.criticality.sheddable,
        horizon=horizon if strategy.kind.paces else 0.0,
    )
    lease = min(settings.lease_max_tokens, math.floor(refill * settings.lease_window))
    policy = AdmitPolicy(
        spec,
        tier=ctx.tier,
        strategy=strategy.kind.value,
        min_delay=strategy.seconds if strategy.kind is StrategyKind.DELAY else 0.0,
        lease=lease if lease >= 1 else 0,
    )
    return Plan(strategy, policy, limit, own_bucket)


def limit_text(limit: Limit, policy: AdmitPolicy, shrunk: Mapping[str, float]) -> str:
    """The limit a refused caller hit: as configured, or as the adaptive factors made it."""
    if not shrunk:
        return f"rate limit {limit.rate}"
    now = Rate(round(policy.spec.refill * limit.rate.period, 2), limit.rate.period)
    why = ", ".join(f"{name} x{value:.2f}" for name, value in sorted(shrunk.items()))
    return f"rate limit {limit.rate} (now {now}, burst {policy.spec.capacity:g}: adapted by {why})"
