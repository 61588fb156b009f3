"""Names of the per-minute metric counters, shared by both stores and the readers.

Stores count each decision once, as ``<outcome>@<tier>`` (``admitted@free``): one
counter per decision on the hot path. Totals per outcome, per tier and overall are
derived when the counters are read (``derive``), which is rare.
``store/lua/admit.lua`` writes the same names; the behavioural suite checks both.
"""

from __future__ import annotations

from ..bucket import Decision
from .base import AdmitRequest

__all__ = [
    "REQUESTS",
    "ADMITTED",
    "GRACED",
    "THROTTLED",
    "DELAY_TOTAL",
    "EXPIRED",
    "UNGATED",
    "STORE_UNAVAILABLE",
    "PUBLISH_FAILED",
    "admission_fields",
    "derive",
    "outcome_field",
    "throttled_field",
    "tier_field",
]

REQUESTS = "requests"
ADMITTED = "admitted"
GRACED = "graced"
THROTTLED = "throttled"
DELAY_TOTAL = "delay_total"
EXPIRED = "expired"
UNGATED = "ungated"
STORE_UNAVAILABLE = "store_unavailable"
# Admissions whose publish then failed (the broker refused it): their token was given back.
PUBLISH_FAILED = "publish_failed"
REJECTED = "reject_with_backoff"
_OUTCOMES = (ADMITTED, GRACED, THROTTLED)


def outcome_field(outcome: str, tier: str) -> str:
    return f"{outcome}@{tier}"


def throttled_field(kind: str) -> str:
    return f"throttled:{kind}"


def tier_field(tier: str) -> str:
    return f"tier:{tier}"


def derive(stored: dict[str, float]) -> dict[str, float]:
    """Stored counters plus the totals per outcome (``admitted``), per tier (``tier:free``)
    and overall (``requests``)."""
    derived = dict(stored)
    for name, value in stored.items():
        outcome, at, tier = name.partition("@")
        if at and outcome in _OUTCOMES:
            derived[outcome] = derived.get(outcome, 0.0) + value
            derived[tier_field(tier)] = derived.get(tier_field(tier), 0.0) + value
            derived[REQUESTS] = derived.get(REQUESTS, 0.0) + value
    return derived


def admission_fields(
    decision: Decision, reserved: bool, request: AdmitRequest, delay: float
) -> dict[str, float]:
    policy = request.policy
    fields: dict[str, float] = {}
    if request.pending:
        fields[outcome_field(ADMITTED, policy.tier)] = request.pending
    if decision is Decision.ALLOW:
        key = outcome_field(ADMITTED, policy.tier)
        fields[key] = fields.get(key, 0) + 1
    elif decision is Decision.ALLOW_WITH_GRACE:
        fields[outcome_field(GRACED, policy.tier)] = 1
    else:
        fields[outcome_field(THROTTLED, policy.tier)] = 1
        fields[throttled_field(policy.strategy if reserved else REJECTED)] = 1
        if reserved:
            fields[DELAY_TOTAL] = delay
    return fields
