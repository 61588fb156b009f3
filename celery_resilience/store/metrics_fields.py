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


def throttled_field(kind: str) -> str:
    return f"throttled:{kind}"


def tier_field(tier: str) -> str:
    return f"tier:{tier}"


def admission_fields(
    decision: Decision, reserved: bool, request: AdmitRequest, delay: float
) -> dict[str, float]:
    fields: dict[str, float] = {REQUESTS: 1, tier_field(request.tier): 1}
    if decision is Decision.ALLOW:
        fields[ADMITTED] = 1
    elif decision is Decision.ALLOW_WITH_GRACE:
        fields[GRACED] = 1
    else:
        fields[THROTTLED] = 1
        fields[throttled_field(request.strategy if reserved else REJECTED)] = 1
        if reserved:
            fields[DELAY_TOTAL] = delay
    return fields
