"""What admission needs of the store.

Each operation that must be atomic is a single call here, so a Redis implementation can
make it a single round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .bucket import BucketSpec, Outcome

__all__ = ["AdmissionStore", "AdmitPolicy", "AdmitRequest", "delay_for"]


@dataclass(frozen=True, eq=False)
class AdmitPolicy:
    """The unchanging part of an admission: the bucket's numbers and the metric labels.

    ``strategy`` is the throttling strategy that applies if the request is throttled,
    chosen before the call so the store can pace (reserve a future slot) in the same
    round trip; ``min_delay`` is that strategy's own delay, recorded in the metrics.
    Policies are built once and reused (identity-hashed), so a store may cache their
    wire form.
    """

    spec: BucketSpec
    tier: str
    strategy: str
    min_delay: float = 0.0
    lease: int = 0
    """Extra tokens to lease on an allow (0: this policy's rate is too low to lease)."""


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    """One admission: the bucket to draw from, under a policy.

    ``lease`` asks for that many extra tokens when the bucket can spare them;
    ``pending`` reports admissions made locally from an earlier lease, so they reach
    the metrics with this round trip. ``renew``: no request of its own, only the lease
    (``bucket.renew``), riding on another key's round trip.
    """

    bucket_key: str
    shard: int
    policy: AdmitPolicy
    lease: int = 0
    pending: int = 0
    renew: bool = False


class AdmissionStore(Protocol):
    def user_bucket(self, user_id: str | None, tier: str, request_type: str | None) -> tuple[str, int]:
        """The key and shard of a caller's bucket: a user's own (or, without a user, the
        tier's anonymous one), per request type when it has a limit of its own."""

    def admit(self, request: AdmitRequest) -> Outcome:
        """Decide one admission and record it in the per-minute metrics, atomically."""

    def admit_many(self, requests: Sequence[AdmitRequest]) -> list[Outcome | None]:
        """``admit`` for each, in as few round trips as the store can (each atomic on its
        own). Raises ``StoreUnavailable`` when the first could not be decided; a later
        one that could not be is None."""

    def refund(self, bucket_key: str, spec: BucketSpec, grace: bool) -> None:
        """Give back the grace or the token an admission took (its publish failed)."""

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        """Add to the current minute's metric counters."""


def delay_for(outcome: Outcome, min_delay: float) -> float:
    """Countdown of a paced (reserved) request: its slot, but never less than the strategy's delay."""
    return max(min_delay, outcome.retry_after)
