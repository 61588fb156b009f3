"""Names of the per-minute metric counters, shared by both stores and the readers.

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
    "admission_fields",
    "with_requests",
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
REJECTED = "reject_with_backoff"


def with_requests(fields: dict[str, float]) -> dict[str, float]:
    """Add the derived ``requests`` total (stores count only the outcomes)."""
    total = fields.get(ADMITTED, 0.0) + fields.get(GRACED, 0.0) + fields.get(THROTTLED, 0.0)
    if total:
        fields[REQUESTS] = total
    return fields


def throttled_field(kind: str) -> str:
    return f"throttled:{kind}"


def tier_field(tier: str) -> str:
    return f"tier:{tier}"


def admission_fields(
    decision: Decision, reserved: bool, request: AdmitRequest, delay: float
) -> dict[str, float]:
    policy = request.policy
    fields: dict[str, float] = {tier_field(policy.tier): 1}
    if decision is Decision.ALLOW:
        fields[ADMITTED] = 1
    elif decision is Decision.ALLOW_WITH_GRACE:
        fields[GRACED] = 1
    else:
        fields[THROTTLED] = 1
        fields[throttled_field(policy.strategy if reserved else REJECTED)] = 1
        if reserved:
            fields[DELAY_TOTAL] = delay
    return fields
