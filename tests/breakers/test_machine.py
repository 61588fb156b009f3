"""The breaker state machine on its own, time and jitter passed in."""

from __future__ import annotations

import pytest

from celery_resilience.breakers.machine import (
    BreakerData,
    BreakerPolicy,
    BreakerState,
    Denied,
    Permit,
    acquire,
    force,
    open_timeout,
    record,
)


def state_of(data: BreakerData) -> BreakerState:
    """The breaker's state now (read through a call: the machine mutates ``data`` in place)."""
    return data.state


POLICY = BreakerPolicy(
    failure_threshold=5.0,
    window=60,
    minimum_calls=3,
    recovery_timeout=30,
    max_recovery_timeout=200,
    jitter=0.0,
    half_open_probes=2,
    probe_lease=10,
)


def fail(
    data: BreakerData,
    now: float,
    weight: float = 2.5,
    generation: int | None = None,
    lease: str = "",
    retry_after: float | None = None,
    trip_now: bool = False,
) -> None:
    gen = data.generation if generation is None else generation
    record(data, POLICY, now, gen, lease, weight, retry_after, trip_now, 0.0)


def tripped(now: float = 0.0) -> BreakerData:
    data = BreakerData()
    for _ in range(2):
        fail(data, now)
    assert state_of(data) is BreakerState.CLOSED
    fail(data, now)
    assert state_of(data) is BreakerState.OPEN
    return data


def test_weights_trip_only_after_the_minimum_calls() -> None:
    """Two heavy failures reach the threshold but not the minimum of three calls; the third trips."""
    data = tripped()
    assert data.generation == 1
    assert data.open_until == 30


def test_successes_count_as_calls_but_add_no_weight() -> None:
    """Many successes and a few light failures stay closed."""
    data = BreakerData()
    for now in range(20):
        fail(data, now, weight=0.0)
    fail(data, 20, weight=2.0)
    fail(data, 21, weight=2.0)
    assert state_of(data) is BreakerState.CLOSED


def test_the_window_forgets_old_failures() -> None:
    """Failures older than the window stop counting, so the weight never accumulates forever."""
    data = BreakerData()
    fail(data, 0, weight=2.0)
    fail(data, 1, weight=2.0)
    fail(data, 70, weight=2.0)
    fail(data, 71, weight=2.0)
    assert state_of(data) is BreakerState.CLOSED
    fail(data, 72, weight=2.0)
    assert state_of(data) is BreakerState.OPEN


def test_open_refuses_until_the_deadline_then_admits_exactly_the_probes() -> None:
    """OPEN denies with the time left; afterwards HALF_OPEN grants exactly half_open_probes."""
    data = tripped()
    denied = acquire(data, POLICY, 10, "a")
    assert isinstance(denied, Denied) and denied.retry_after == 20
    permits = [acquire(data, POLICY, 30, lease) for lease in "abcd"]
    assert [isinstance(p, Permit) and p.probe for p in permits] == [True, True, False, False]
    assert state_of(data) is BreakerState.HALF_OPEN and data.generation == 2


def test_an_expired_probe_lease_frees_its_slot() -> None:
    """A probe whose worker died stops counting after probe_lease seconds."""
    data = tripped()
    acquire(data, POLICY, 30, "a")
    acquire(data, POLICY, 30, "b")
    assert isinstance(acquire(data, POLICY, 35, "c"), Denied)
    permit = acquire(data, POLICY, 40.5, "c")
    assert isinstance(permit, Permit) and permit.probe


def test_probe_successes_close_and_a_probe_failure_reopens_longer() -> None:
    """success_threshold successes close; one failure reopens with the next, longer timeout."""
    policy = POLICY
    data = tripped()
    permit = acquire(data, policy, 30, "a")
    assert isinstance(permit, Permit)
    fail(data, 31, weight=2.0, lease="a")
    assert state_of(data) is BreakerState.OPEN and data.open_until == 31 + 60
    permit = acquire(data, policy, 91, "b")
    assert isinstance(permit, Permit)
    fail(data, 92, weight=0.0, lease="b")
    assert state_of(data) is BreakerState.CLOSED and data.trips == 0


def test_outcomes_from_an_older_generation_are_ignored() -> None:
    """A slow call admitted before the trip cannot close or reopen the breaker later."""
    data = BreakerData()
    old = acquire(data, POLICY, 0, "slow")
    assert isinstance(old, Permit)
    data = tripped()
    acquire(data, POLICY, 30, "probe")
    result = record(data, POLICY, 31, old.generation, "slow", 0.0, None, False, 0.0)
    assert result.ignored and data.state is BreakerState.HALF_OPEN
    result = record(data, POLICY, 31, old.generation, "slow", 2.5, None, False, 0.0)
    assert result.ignored and data.state is BreakerState.HALF_OPEN


def test_retry_after_and_quota_hold_the_breaker_open_longer() -> None:
    """A provider's Retry-After beyond the timeout wins; an exhausted quota opens at once, long."""
    data = BreakerData()
    for _ in range(3):
        fail(data, 0, retry_after=120)
    assert data.open_until == 120
    quota = BreakerData()
    fail(quota, 5, weight=1.5, trip_now=True)
    assert quota.state is BreakerState.OPEN and quota.open_until == 5 + POLICY.quota_open_seconds


def test_timeouts_grow_with_consecutive_trips_up_to_the_cap_with_jitter() -> None:
    """30, 60, 120, then capped at 200; jitter adds up to its share on top."""
    assert [open_timeout(POLICY, n, 0.0) for n in (1, 2, 3, 4, 5)] == [30, 60, 120, 200, 200]
    jittery = BreakerPolicy(recovery_timeout=30, jitter=0.2)
    assert open_timeout(jittery, 1, 0.5) == pytest.approx(33)


def test_operator_states() -> None:
    """forced_open refuses with no deadline, disabled records nothing, closed resets everything."""
    data = BreakerData()
    force(data, BreakerState.FORCED_OPEN)
    denied = acquire(data, POLICY, 0, "a")
    assert isinstance(denied, Denied) and denied.retry_after is None
    force(data, BreakerState.DISABLED)
    permit = acquire(data, POLICY, 0, "a")
    assert isinstance(permit, Permit) and not permit.recording
    for _ in range(10):
        fail(data, 0)
    assert state_of(data) is BreakerState.DISABLED
    force(data, BreakerState.CLOSED)
    assert state_of(data) is BreakerState.CLOSED and data.trips == 0
    with pytest.raises(ValueError, match="operator"):
        force(data, BreakerState.HALF_OPEN)
