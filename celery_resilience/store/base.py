"""The ``Store`` interface: the one way shared state is read and written.

Two implementations keep the same semantics: ``MemoryStore`` for one process (demos,
quick starts, tests of user code) and ``RedisStore`` for many workers on many hosts.
Each operation that must be atomic is a single call here, so a Redis implementation
can make it a single round trip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..breaker import BreakerPolicy, BreakerState, BreakerView, Denied, Permit, Recorded
from ..bucket import BucketSpec, Outcome
from ..keys import KeySpace
from ..load import HealthSnapshot

__all__ = [
    "Store",
    "AdmitRequest",
    "AdmitPolicy",
    "BreakerOutcome",
    "Clock",
    "MinuteClock",
    "SECONDS_PER_MINUTE",
]

Clock = Callable[[], float]
TransitionListener = Callable[["str | None", "BreakerView | None"], None]
SECONDS_PER_MINUTE = 60
DEMAND_HISTORY_HOURS = 6 * 7 * 24
LOAD_HISTORY_MINUTES = 24 * 60
# A cache lookup finds candidates through the question's few rarest terms, adding terms
# (rarest first) only while the entries they name stay within a budget: common words
# name thousands of entries and discriminate nothing.
RAREST_TERMS = 4
CANDIDATE_BUDGET = 2000


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
    the metrics with this round trip.
    """

    bucket_key: str
    shard: int
    policy: AdmitPolicy
    lease: int = 0
    pending: int = 0
    metrics_scope: str = ""


@dataclass(frozen=True, slots=True)
class BreakerOutcome:
    """One call's result for ``breaker_record``; ``jitter_draw`` in [0, 1) is drawn by the caller."""

    generation: int
    lease: str
    weight: float
    retry_after: float | None = None
    trip_now: bool = False
    jitter_draw: float = 0.0
    calls: int = 1


@dataclass(frozen=True)
class CacheEntry:
    """One cached answer: the question, its vector and index terms, and when it was stored."""

    id: str
    question: str
    answer: Any
    vector: dict[int, float]
    terms: list[str]
    at: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "question": self.question,
                "answer": self.answer,
                "vector": [[k, v] for k, v in self.vector.items()],
                "terms": self.terms,
                "at": self.at,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> CacheEntry:
        data = json.loads(raw)
        return cls(
            data["id"],
            data["question"],
            data["answer"],
            {int(k): float(v) for k, v in data["vector"]},
            list(data["terms"]),
            float(data["at"]),
        )


@runtime_checkable
class Store(Protocol):
    keys: KeySpace
    """The key space every key of this store lives in."""

    def admit(self, request: AdmitRequest) -> Outcome:
        """Decide one admission and record it in the per-minute metrics, atomically."""

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        """Add to the current minute's metric counters."""

    def drain(self, bucket_key: str, spec: BucketSpec, seconds: float) -> None:
        """Empty a bucket so that its next token is due in ``seconds``."""

    def refund(self, bucket_key: str, spec: BucketSpec, grace: bool) -> None:
        """Give back the grace or the token an admission took (its publish failed)."""

    def breaker_acquire(
        self, name: str, policy: BreakerPolicy, lease: str
    ) -> tuple[Permit | Denied, BreakerView]:
        """Ask to make a call through breaker ``name``; also returns the breaker's state."""

    def breaker_record(self, name: str, policy: BreakerPolicy, outcome: BreakerOutcome) -> Recorded:
        """Record one call's outcome, atomically with any transition it causes."""

    def breaker_release(self, name: str, policy: BreakerPolicy, generation: int, lease: str) -> None:
        """A probe gives its half-open slot back without an outcome."""

    def breaker_force(self, name: str, policy: BreakerPolicy, state: BreakerState) -> BreakerView:
        """Operator action: closed (reset), forced_open or disabled."""

    def breaker_read(self, name: str, policy: BreakerPolicy) -> BreakerView:
        """The breaker's state, windowed calls and weight, probes held."""

    def cache_put(self, namespace: str, entry: CacheEntry, max_entries: int, ttl: float) -> int:
        """Add a semantic cache entry (indexed by ``entry.terms``); evict the expired and the
        oldest beyond ``max_entries``. Returns how many were evicted."""

    def cache_candidates(self, namespace: str, terms: list[str], limit: int, ttl: float) -> list[CacheEntry]:
        """Up to ``limit`` live entries sharing most terms with a question, best first."""

    def cache_touch(self, namespace: str, entry_id: str) -> None:
        """Mark an entry used now (its TTL starts again)."""

    def publish_health(self, snapshot: HealthSnapshot) -> None:
        """Store a worker's heartbeat (replacing its previous one)."""

    def read_health(self) -> list[HealthSnapshot]:
        """Every worker's latest heartbeat; readers decide which are stale."""

    def hold_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew lease ``name`` for ``owner``; False while another owner holds it."""

    def lease_holder(self, name: str) -> str | None:
        """Who holds lease ``name`` now, if anyone."""

    def claim(self, name: str, seconds: float) -> bool:
        """True for the first caller in ``seconds`` (a cool-down shared by every process)."""

    def push_alert(self, record: str, keep: int = 50) -> None:
        """Remember an alert that was sent (the latest ``keep`` are kept)."""

    def recent_alerts(self, count: int = 20) -> list[str]:
        """The latest alerts sent, newest first."""

    def record_load(self, minute: int, usage: float) -> None:
        """The cluster's resource use during ``minute`` (latest reading wins)."""

    def load_series(self, minutes: list[int]) -> dict[int, float]:
        """Recorded resource use of the given minutes (missing minutes are left out)."""

    def requests_in_hour(self, hour: int) -> float:
        """Admission requests decided during absolute ``hour`` (from the minute counters)."""

    def record_demand(self, hour: int, requests: float) -> None:
        """Keep an hour's demand in the history, unless another process already did."""

    def demand_history(self) -> dict[int, float]:
        """Absolute hour -> demand, for the hours kept (about six weeks)."""

    def subscribe(self, listener: TransitionListener) -> None:
        """Call ``listener(name, view)`` on every breaker transition made by any process
        sharing this store, as soon as it happens. ``listener(None, None)`` means the
        feed was interrupted: anything cached from it may be stale."""

    def metrics(self, minute: int | None = None, scope: str = "") -> dict[str, float]:
        """Counters of one minute (default: the current one), summed over shards;
        ``scope="provider"`` reads the provider quota counters."""

    def now(self) -> float:
        """The store's clock, in seconds since the epoch."""

    def purge(self) -> int:
        """Delete every key of this store's key space; returns how many were deleted."""

    def close(self) -> None:
        """Release connections."""


class MinuteClock:
    """Tracks the store's clock from the times its answers carry, with no extra round trip."""

    def __init__(self, local: Clock = time.time) -> None:
        self._local = local
        self._offset = 0.0
        self._observed_at = -1e18

    def observe(self, store_now: float) -> None:
        local = self._local()
        self._offset = store_now - local
        self._observed_at = local

    def fresh(self, within: float) -> bool:
        """Whether an answer of the store set the offset less than ``within`` seconds ago."""
        return self._local() - self._observed_at < within

    def now(self) -> float:
        return self._local() + self._offset

    def minute(self) -> int:
        return int(self.now() // SECONDS_PER_MINUTE)


def delay_for(outcome: Outcome, min_delay: float) -> float:
    """Countdown of a paced (reserved) request: its slot, but never less than the strategy's delay."""
    return max(min_delay, outcome.retry_after)
