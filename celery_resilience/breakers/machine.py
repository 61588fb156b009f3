"""The circuit breaker state machine, pure: time and jitter are passed in.

``MemoryStore`` runs these functions directly; ``store/lua/breaker.lua`` is the same
machine as one atomic script per operation, and one behavioural suite holds both to
the same answers.

- CLOSED: calls pass. Each outcome adds its weight (0 for a success or an error that
  says nothing about the dependency) to a sliding window of ``buckets`` slices over
  ``window`` seconds, so old failures expire. When at least ``minimum_calls`` were seen
  in the window and the weights reach ``failure_threshold``, the breaker trips.
- OPEN: calls are refused until ``open_until``: ``recovery_timeout`` x ``backoff`` per
  consecutive trip, capped at ``max_recovery_timeout``, plus up to ``jitter`` of it, and
  never before a provider's ``Retry-After``.
- HALF_OPEN: exactly ``half_open_probes`` calls for the whole cluster, each a lease that
  expires after ``probe_lease`` seconds, so a worker killed mid-probe cannot leave the
  breaker stuck. ``success_threshold`` probe successes close it; one failure reopens it
  with a longer timeout.
- FORCED_OPEN and DISABLED are operator states: refuse everything, or pass everything
  and record nothing.

Every transition increments ``generation``; each permit carries the generation it was
granted in, and an outcome from an older generation (a slow call, a redelivered task)
is ignored.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

__all__ = [
    "BreakerState",
    "BreakerPolicy",
    "BreakerData",
    "Permit",
    "Denied",
    "Recorded",
    "BreakerView",
    "view",
    "acquire",
    "record",
    "release",
    "force",
    "open_timeout",
    "effective_state",
]


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: float = 5.0
    window: float = 60.0
    minimum_calls: int = 5
    recovery_timeout: float = 30.0
    max_recovery_timeout: float = 600.0
    backoff: float = 2.0
    jitter: float = 0.1
    half_open_probes: int = 1
    success_threshold: int = 1
    probe_lease: float = 60.0
    call_timeout: float | None = None
    quota_open_seconds: float = 3600.0
    buckets: int = 10

    @property
    def bucket_width(self) -> float:
        return self.window / self.buckets


@dataclass(slots=True)
class BreakerData:
    state: BreakerState = BreakerState.CLOSED
    generation: int = 0
    open_until: float = 0.0
    trips: int = 0
    successes: int = 0
    window: dict[int, tuple[int, float]] = field(default_factory=dict)  # slice -> (calls, weight)
    probes: dict[str, float] = field(default_factory=dict)  # lease id -> expiry


@dataclass(frozen=True, slots=True)
class Permit:
    generation: int
    probe: bool = False
    lease: str = ""
    recording: bool = True


@dataclass(frozen=True, slots=True)
class Denied:
    state: BreakerState
    retry_after: float | None  # None: until an operator acts


@dataclass(frozen=True, slots=True)
class BreakerView:
    """What a process may cache of a breaker: enough to refuse calls while it is open."""

    state: BreakerState
    generation: int
    open_until: float
    trips: int = 0
    calls: int = 0
    weight: float = 0.0
    probes: int = 0


@dataclass(frozen=True, slots=True)
class Recorded:
    state: BreakerState
    generation: int
    open_until: float
    changed: bool
    ignored: bool


def open_timeout(policy: BreakerPolicy, trips: int, jitter_draw: float) -> float:
    """How long the ``trips``-th consecutive opening lasts; ``jitter_draw`` is in [0, 1)."""
    base = min(policy.max_recovery_timeout, policy.recovery_timeout * policy.backoff ** max(0, trips - 1))
    return base * (1.0 + policy.jitter * jitter_draw)


def acquire(data: BreakerData, policy: BreakerPolicy, now: float, lease: str) -> Permit | Denied:
    """Ask to make a call. Mutates ``data`` (OPEN -> HALF_OPEN, probe leases)."""
    state = data.state
    if state is BreakerState.DISABLED:
        return Permit(data.generation, recording=False)
    if state is BreakerState.FORCED_OPEN:
        return Denied(state, None)
    if state is BreakerState.OPEN:
        if now < data.open_until:
            return Denied(state, data.open_until - now)
        data.state = BreakerState.HALF_OPEN
        data.generation += 1
        data.successes = 0
        data.probes.clear()
    if data.state is BreakerState.HALF_OPEN:
        _prune_probes(data, now)
        if len(data.probes) < policy.half_open_probes:
            data.probes[lease] = now + policy.probe_lease
            return Permit(data.generation, probe=True, lease=lease)
        return Denied(BreakerState.HALF_OPEN, max(0.0, min(data.probes.values()) - now))
    return Permit(data.generation)


def record(
    data: BreakerData,
    policy: BreakerPolicy,
    now: float,
    generation: int,
    lease: str,
    weight: float,
    retry_after: float | None,
    trip_now: bool,
    jitter_draw: float,
    calls: int = 1,
) -> Recorded:
    """Record one call's outcome. ``weight`` 0 is a success (or an error that says nothing
    about the dependency); ``trip_now`` opens at once (an exhausted quota). ``calls`` > 1
    reports successes counted locally along with it (CLOSED only)."""
    before = (data.state, data.generation)
    if data.state in (BreakerState.DISABLED, BreakerState.FORCED_OPEN) or generation != data.generation:
        return Recorded(data.state, data.generation, data.open_until, False, True)
    if data.state is BreakerState.HALF_OPEN:
        data.probes.pop(lease, None)
        if weight > 0 or trip_now:
            _trip(data, policy, now, retry_after, trip_now, jitter_draw)
        else:
            data.successes += 1
            if data.successes >= policy.success_threshold:
                _close(data)
    elif data.state is BreakerState.CLOSED:
        current = math.floor(now / policy.bucket_width)
        seen_here, total = data.window.get(current, (0, 0.0))
        data.window[current] = (seen_here + calls, total + weight)
        oldest = current - policy.buckets + 1
        for index in [i for i in data.window if i < oldest]:
            del data.window[index]
        seen = sum(c for c, _ in data.window.values())
        weights = sum(w for _, w in data.window.values())
        if trip_now or (seen >= policy.minimum_calls and weights >= policy.failure_threshold):
            _trip(data, policy, now, retry_after, trip_now, jitter_draw)
    changed = (data.state, data.generation) != before
    return Recorded(data.state, data.generation, data.open_until, changed, False)


def release(data: BreakerData, generation: int, lease: str) -> None:
    """Give back a probe's half-open slot without an outcome: the call ended in Celery
    control flow (``self.retry()``, ``Ignore``), which says nothing about the dependency.
    Without this the slot stays taken until the lease expires."""
    if data.state is BreakerState.HALF_OPEN and generation == data.generation:
        data.probes.pop(lease, None)


def force(data: BreakerData, state: BreakerState) -> None:
    """Operator action: ``forced_open``, ``disabled``, or ``closed`` (a reset)."""
    if state is BreakerState.CLOSED:
        _close(data)
        data.trips = 0
        return
    if state not in (BreakerState.FORCED_OPEN, BreakerState.DISABLED):
        raise ValueError(f"an operator can set closed, forced_open or disabled, not {state.value}")
    data.state = state
    data.generation += 1
    data.window.clear()
    data.probes.clear()


def _trip(
    data: BreakerData,
    policy: BreakerPolicy,
    now: float,
    retry_after: float | None,
    trip_now: bool,
    jitter_draw: float,
) -> None:
    data.trips += 1
    timeout = open_timeout(policy, data.trips, jitter_draw)
    if trip_now:
        timeout = max(timeout, policy.quota_open_seconds)
    data.state = BreakerState.OPEN
    data.generation += 1
    data.open_until = now + max(timeout, retry_after or 0.0)
    data.successes = 0
    data.window.clear()
    data.probes.clear()


def _close(data: BreakerData) -> None:
    data.state = BreakerState.CLOSED
    data.generation += 1
    data.trips = 0
    data.successes = 0
    data.open_until = 0.0
    data.window.clear()
    data.probes.clear()


def _prune_probes(data: BreakerData, now: float) -> None:
    for lease in [lease for lease, expiry in data.probes.items() if expiry <= now]:
        del data.probes[lease]


def view(data: BreakerData, policy: BreakerPolicy, now: float) -> BreakerView:
    """The breaker as an operator (or a process's cache) sees it at ``now``."""
    _prune_probes(data, now)
    oldest = math.floor(now / policy.bucket_width) - policy.buckets + 1
    live = [slice_ for index, slice_ in data.window.items() if index >= oldest]
    return BreakerView(
        data.state,
        data.generation,
        data.open_until,
        data.trips,
        sum(c for c, _ in live),
        sum(w for _, w in live),
        len(data.probes),
    )


def effective_state(state: BreakerState, open_until: float, now: float) -> BreakerState:
    """What the next call finds: an open breaker whose time is up reads as half-open (its next
    call is a probe), though the store moves it only when that call arrives."""
    if state is BreakerState.OPEN and open_until <= now:
        return BreakerState.HALF_OPEN
    return state
