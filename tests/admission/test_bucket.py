"""The admission algorithm on its own, with time passed in."""

from __future__ import annotations

import pytest

from celery_resilience.admission.bucket import BucketSpec, BucketState, Decision, Outcome, bucket_ttl, decide

SPEC = BucketSpec(capacity=3, refill=1.0, grace_limit=2, grace_period=60)


def run(spec: BucketSpec, times: list[float]) -> list[Decision]:
    state: BucketState | None = None
    out = []
    for now in times:
        state, outcome = decide(state, spec, now)
        out.append(outcome.decision)
    return out


def after_first(spec: BucketSpec, count: int) -> tuple[BucketState, list[Outcome]]:
    """Admit once at t=0, then ``count`` more at t=0: the state and those later outcomes."""
    state, _ = decide(None, spec, 0.0)
    outcomes = []
    for _ in range(count):
        state, outcome = decide(state, spec, 0.0)
        outcomes.append(outcome)
    return state, outcomes


def test_burst_then_grace_then_throttle() -> None:
    """A fresh bucket admits its burst, then its grace allowance, then throttles."""
    assert run(SPEC, [0.0] * 6) == [Decision.ALLOW] * 3 + [Decision.ALLOW_WITH_GRACE] * 2 + [
        Decision.THROTTLE
    ]


def test_tokens_refill_at_the_rate() -> None:
    """After the burst, one more admission per 1/refill seconds."""
    spec = BucketSpec(capacity=1, refill=2.0, grace_limit=0, grace_period=60)
    assert run(spec, [0.0, 0.1, 0.5, 0.6, 1.0]) == [
        Decision.ALLOW,
        Decision.THROTTLE,
        Decision.ALLOW,
        Decision.THROTTLE,
        Decision.ALLOW,
    ]


def test_throttle_says_when_a_token_is_due() -> None:
    """retry_after is the exact wait for the next token."""
    spec = BucketSpec(capacity=1, refill=0.5, grace_limit=0, grace_period=60)
    state, _ = decide(None, spec, 10.0)
    _, outcome = decide(state, spec, 11.0)
    assert outcome.decision is Decision.THROTTLE
    assert outcome.retry_after == pytest.approx(1.0)
    assert not outcome.reserved


def test_grace_renews_per_window_not_continuously() -> None:
    """Grace used up in one window is available again in the next window only."""
    spec = BucketSpec(capacity=1, refill=1e-6, grace_limit=1, grace_period=60)
    assert run(spec, [0.0, 1.0, 2.0, 59.0, 60.0, 61.0]) == [
        Decision.ALLOW,
        Decision.ALLOW_WITH_GRACE,
        Decision.THROTTLE,
        Decision.THROTTLE,
        Decision.ALLOW_WITH_GRACE,
        Decision.THROTTLE,
    ]


def test_reservations_pace_throttled_work_at_the_rate() -> None:
    """With a horizon, each throttled request takes the next future slot: waits grow by 1/refill."""
    spec = BucketSpec(capacity=1, refill=1.0, grace_limit=0, grace_period=60, horizon=10)
    _, outcomes = after_first(spec, 4)
    assert all(o.reserved for o in outcomes)
    assert [o.retry_after for o in outcomes] == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_reservation_beyond_the_horizon_is_refused() -> None:
    """A wait longer than the horizon is not reserved, so the bucket takes no more debt."""
    spec = BucketSpec(capacity=1, refill=1.0, grace_limit=0, grace_period=60, horizon=2.5)
    state, outcomes = after_first(spec, 4)
    assert [o.reserved for o in outcomes] == [True, True, False, False]
    assert state.tokens == pytest.approx(-2.0)


def test_debt_is_repaid_before_anyone_is_admitted_again() -> None:
    """Paced requests are paid for: immediate admissions resume only once the debt is repaid."""
    spec = BucketSpec(capacity=1, refill=1.0, grace_limit=0, grace_period=60, horizon=10)
    state, _ = decide(None, spec, 0.0)
    state, _ = decide(state, spec, 0.0)  # reserved: tokens -1
    _, at_one = decide(state, spec, 1.0)
    _, at_two = decide(state, spec, 2.0)
    assert at_one.decision is Decision.THROTTLE
    assert at_two.decision is Decision.ALLOW


def test_reserve_refuses_sheddable_work_first() -> None:
    """With two tokens left, a request that must leave one in reserve is throttled; a critical one is not."""
    critical = BucketSpec(capacity=3, refill=1e-6, grace_limit=0, grace_period=60)
    sheddable = BucketSpec(
        capacity=3, refill=1e-6, grace_limit=5, grace_period=60, reserve=1.5, grace_allowed=False
    )
    state, _ = decide(None, critical, 0.0)  # 2 tokens left
    _, shed = decide(state, sheddable, 0.0)
    _, crit = decide(state, critical, 0.0)
    assert shed.decision is Decision.THROTTLE
    assert crit.decision is Decision.ALLOW


def test_time_going_backwards_neither_mints_nor_loses_tokens() -> None:
    """Clock skew between hosts cannot refill a bucket."""
    spec = BucketSpec(capacity=1, refill=1.0, grace_limit=0, grace_period=60)
    state, _ = decide(None, spec, 100.0)
    state, outcome = decide(state, spec, 50.0)
    assert outcome.decision is Decision.THROTTLE
    assert state.stamp == 100.0


def test_ttl_covers_a_full_refill_and_the_grace_window() -> None:
    """Expired state is indistinguishable from a fresh bucket, so expiring it loses nothing."""
    spec = BucketSpec(capacity=10, refill=0.5, grace_limit=1, grace_period=5)
    state = BucketState(tokens=0.0, stamp=0.0)
    assert bucket_ttl(state, spec) == pytest.approx(21.0)


def test_a_lease_takes_extra_tokens_only_when_the_bucket_can_spare_them() -> None:
    """An allow with a lease of 3 takes 4 tokens when 4 are there, and just 1 otherwise."""
    spec = BucketSpec(capacity=5, refill=1e-6, grace_limit=0, grace_period=60)
    state, first = decide(None, spec, 0.0, lease=3)
    assert (first.decision, first.leased) == (Decision.ALLOW, 3)
    assert state.tokens == pytest.approx(1.0)
    state, second = decide(state, spec, 0.0, lease=3)
    assert (second.decision, second.leased) == (Decision.ALLOW, 0)
    assert state.tokens == pytest.approx(0.0)
