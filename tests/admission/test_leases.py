"""Token leases: hot keys skip the round trip without admitting more than the limit."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from celery_resilience.admission.bucket import BucketSpec, Decision, Outcome
from celery_resilience.admission.gate import Admission
from celery_resilience.admission.leases import MAX_RENEWALS, Leases
from celery_resilience.admission.port import AdmitPolicy, AdmitRequest
from celery_resilience.errors import StoreUnavailable, Throttled
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock
from tests.conftest import Monotonic, SplitClock


class Counting:
    """Wraps a real store and counts the round trips admission makes to it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.requests: list[AdmitRequest] = []
        self.trips = 0
        self.down = False  # answer as a store that cannot be reached
        self.interrupt = False  # the caller interrupted while a round trip is on its way

    def user_bucket(self, user_id: str | None, tier: str, request_type: str | None) -> tuple[str, int]:
        return self.inner.user_bucket(user_id, tier, request_type)

    def refund(self, bucket_key: str, spec: BucketSpec, grace: bool) -> None:
        self.inner.refund(bucket_key, spec, grace)

    def admit(self, request: AdmitRequest) -> Outcome:
        self.requests.append(request)
        self.trips += 1
        if self.down:
            raise StoreUnavailable("store did not answer: timed out")
        return self.inner.admit(request)

    def admit_many(self, requests: Sequence[AdmitRequest]) -> list[Outcome | None]:
        self.requests.extend(requests)
        self.trips += 1
        if self.interrupt:
            raise KeyboardInterrupt
        if self.down:
            raise StoreUnavailable("store did not answer: timed out")
        return self.inner.admit_many(requests)

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        if self.down:
            raise StoreUnavailable("store did not answer: timed out")
        self.inner.count(fields, shard)

    def metrics(self, minute: int | None = None) -> dict[str, float]:
        return self.inner.metrics(minute)

    def now(self) -> float:
        return self.inner.now()

    def purge(self) -> int:
        return self.inner.purge()

    def close(self) -> None:
        self.inner.close()


def make(store: Store, rate: str, **conf: Any) -> tuple[Admission, Counting, Monotonic]:
    settings = ResilienceSettings.from_conf(
        {
            "resilience_tiers": {"t": {"rate": rate, "burst": 100}},
            "resilience_throttle_strategies": [{"strategy": "reject_with_backoff"}],
            **{f"resilience_{k}": v for k, v in conf.items()},
        }
    )
    counting, mono = Counting(store), Monotonic(1000.0)
    clock = SplitClock(FakeClock(), mono)
    adm = Admission(
        settings.admission, lambda: counting, retry_interval=settings.store_retry_interval, clock=clock
    )
    return adm, counting, mono


def test_a_hot_key_admits_from_its_lease_without_a_round_trip(store: Store) -> None:
    """At 100/s with a 0.1 s window, one round trip leases 10 tokens: 11 admissions, 1 round trip."""
    adm, counting, _ = make(store, "100/s", lease_window=0.1)
    ctx = adm.context("hot", None, "interactive", None)
    verdicts = [adm.decide(ctx, task_name="t") for _ in range(11)]
    assert all(v.decision is Decision.ALLOW for v in verdicts)
    assert len(counting.requests) == 1
    adm.decide(ctx, task_name="t")
    assert len(counting.requests) == 2
    assert counting.requests[1].pending == 10


def test_a_publish_and_a_decision_for_the_same_caller_share_its_lease(store: Store) -> None:
    """The publish path (what the call named) and ``decide`` (a resolved context) spend one lease."""
    adm, counting, _ = make(store, "100/s", lease_window=0.1)
    ctx, first = adm.admit_call("hot", None, "interactive", None, task_name="t")
    assert first.decision is Decision.ALLOW and ctx == adm.context("hot", None, "interactive", None)
    for _ in range(5):
        adm.decide(ctx, task_name="t")
        adm.admit_call("hot", None, None, "interactive", task_name="t")
    assert counting.trips == 1


def test_lease_admissions_reach_the_metrics(store: Store) -> None:
    """Admissions made from a lease are counted, at the next round trip or at a flush."""
    adm, _, _ = make(store, "100/s", lease_window=0.1)
    ctx = adm.context("hot", None, "interactive", None)
    for _ in range(25):
        adm.decide(ctx, task_name="t")
    adm.flush_leases()
    metrics = store.metrics()
    assert metrics["admitted"] == 25
    assert metrics["tier:t"] == 25


def test_lease_admissions_reach_the_metrics_after_a_store_outage(store: Store) -> None:
    """A lease's admissions whose report found the store down are counted once it answers again."""
    adm, counting, mono = make(store, "100/s", lease_window=0.1, store_retry_interval=1.0)
    ctx = adm.context("hot", None, "interactive", None)
    for _ in range(11):  # one round trip, then the ten leased tokens
        adm.decide(ctx, task_name="t")
    counting.down = True
    mono.now += 0.11
    assert not adm.decide(ctx, task_name="t").checked  # admitted unchecked (fail open)
    counting.down = False
    mono.now += 1.0
    adm.decide(ctx, task_name="t")
    metrics = store.metrics()
    assert metrics["admitted"] == 1 + 10 + 1  # the unchecked one is counted as an outage
    assert metrics["store_unavailable"] == 1


def test_lease_admissions_flushed_during_an_outage_are_counted_later(store: Store) -> None:
    """A lease flush that finds the store down keeps its counts for the next decision it answers."""
    adm, counting, _ = make(store, "100/s", lease_window=10)
    hot = adm.context("hot", None, "interactive", None)
    for _ in range(5):
        adm.decide(hot, task_name="t")
    counting.down = True
    adm.flush_leases()
    counting.down = False
    adm.decide(adm.context("other", None, "interactive", None), task_name="t")
    assert store.metrics()["admitted"] == 5 + 1


def test_an_expired_lease_is_not_spent(store: Store) -> None:
    """After the lease window, admission goes back to the store even with tokens left."""
    adm, counting, mono = make(store, "100/s", lease_window=0.1)
    ctx = adm.context("hot", None, "interactive", None)
    adm.decide(ctx, task_name="t")
    mono.now += 0.11
    adm.decide(ctx, task_name="t")
    assert len(counting.requests) == 2


def test_low_rate_keys_never_lease(store: Store) -> None:
    """A key that mints less than one token per window asks the store every time."""
    adm, counting, _ = make(store, "60/m", lease_window=0.2)
    ctx = adm.context("calm", None, "interactive", None)
    for _ in range(5):
        adm.decide(ctx, task_name="t")
    assert len(counting.requests) == 5
    assert all(r.lease == 0 for r in counting.requests)


def test_leases_never_exceed_the_bucket(store: Store) -> None:
    """A burst of 100 at a negligible refill admits exactly 100, leases or not."""
    adm, _, _ = make(store, "3600/h", lease_window=5.0)
    ctx = adm.context("u", None, "interactive", None)
    admitted = 0
    for _ in range(150):
        try:
            adm.decide(ctx, task_name="t")
            admitted += 1
        except Throttled:
            pass
    assert admitted == 100


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_inherit_leases(store: Store) -> None:
    """A forked child neither spends its parent's leased tokens nor reports its uncounted admissions."""
    adm, _, _ = make(store, "100/s", lease_window=10)
    adm.decide(adm.context("hot", None, "interactive", None), task_name="t")
    adm._unreported["admitted@t"] = 3
    assert adm.leases._leases
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os._exit(0 if not adm.leases._leases and not adm._unreported else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert adm.leases._leases


def test_leases_taken_together_end_together_on_the_half_window_grid() -> None:
    """A lease lasts from half a window to a window, ending on the grid its neighbours end on."""
    mono = Monotonic(1000.0)
    leases = Leases(0.2, mono)
    policy = AdmitPolicy(BucketSpec(capacity=10, refill=100, grace_limit=0, grace_period=60), "t", "delay")
    for offset in (0.01, 0.04, 0.09):
        mono.now = 1000.0 + offset
        leases.take(f"k{offset}", 0, policy, 5)
    ends = [lease.deadline for lease in leases._leases.values()]
    assert ends == pytest.approx([1000.2] * 3)
    mono.now = 1000.12
    leases.take("late", 0, policy, 5)
    assert leases._leases[("late", policy)].deadline == pytest.approx(1000.3)  # 0.18 s, within a window


def test_only_used_leases_that_ended_are_due_and_at_most_a_trips_worth() -> None:
    """Due: leases over and used, never more than MAX_RENEWALS at once; unused ones just leave."""
    mono = Monotonic(1000.0)
    leases = Leases(0.2, mono)
    policy = AdmitPolicy(BucketSpec(capacity=10, refill=100, grace_limit=0, grace_period=60), "t", "delay")
    for index in range(MAX_RENEWALS + 5):
        leases.take(f"used-{index}", index % 3, policy, 4)
        assert leases.use(f"used-{index}", policy) == (True, 0)
    leases.take("idle", 0, policy, 4)
    assert leases.due() == []  # nothing over yet
    mono.now += 0.2
    first = leases.due()
    second = leases.due()
    assert len(first) == MAX_RENEWALS and len(second) == 5
    assert all(renewal.used == 1 and renewal.policy is policy for renewal in first + second)
    assert {r.bucket_key for r in first + second} == {f"used-{i}" for i in range(MAX_RENEWALS + 5)}
    assert leases.due() == [] and not leases._leases


def test_hot_keys_renew_together_in_one_round_trip(store: Store) -> None:
    """Ten hot keys: once their leases end, the first key's round trip renews the other nine."""
    adm, counting, mono = make(store, "100/s", lease_window=0.1)
    hot = [adm.context(f"hot-{i}", None, "interactive", None) for i in range(10)]
    for ctx in hot:
        for _ in range(3):  # one round trip each, then two from the lease
            adm.decide(ctx, task_name="t")
    assert counting.trips == 10
    mono.now += 0.1
    adm.decide(hot[0], task_name="t")
    assert counting.trips == 11
    renewed = [r for r in counting.requests[10:] if r.renew]
    assert len(renewed) == 9 and all(r.pending == 2 for r in renewed)
    for ctx in hot[1:]:
        assert adm.decide(ctx, task_name="t").taken.leased  # type: ignore[union-attr]
    assert counting.trips == 11
    adm.flush_leases()
    assert store.metrics()["admitted"] == 10 * 3 + 1 + 9


def test_a_renewal_the_store_misses_is_counted_when_it_answers(store: Store) -> None:
    """Lease admissions riding on a renewal that found the store down reach the metrics later."""
    adm, counting, mono = make(store, "100/s", lease_window=0.1, store_retry_interval=1.0)
    a, b = (adm.context(user, None, "interactive", None) for user in ("a", "b"))
    for ctx in (a, b):
        for _ in range(4):
            adm.decide(ctx, task_name="t")
    mono.now += 0.1
    counting.down = True
    assert not adm.decide(a, task_name="t").checked
    counting.down = False
    mono.now += 1.0
    adm.decide(b, task_name="t")
    adm.flush_leases()
    metrics = store.metrics()
    assert metrics["admitted"] == 2 * 4 + 1
    assert metrics["store_unavailable"] == 1


POLICY = AdmitPolicy(BucketSpec(capacity=10, refill=100, grace_limit=0, grace_period=60), "t", "delay")


def two_phases(mono: Monotonic) -> Leases:
    """Used leases on both phases of the grid: "early" ends at 1000.2, "late" at 1000.3."""
    leases = Leases(0.2, mono)
    leases.take("early", 0, POLICY, 5)
    mono.now = 1000.11
    leases.take("late", 1, POLICY, 5)
    leases.take("idle", 1, POLICY, 5)
    assert leases.use("early", POLICY) == (True, 0)
    assert leases.use("late", POLICY) == (True, 0)
    return leases


def test_a_renewal_brings_along_the_used_leases_ending_on_the_next_line() -> None:
    """Renewing "early" after its end brings "late" along; both then end on one line."""
    mono = Monotonic(1000.0)
    leases = two_phases(mono)
    mono.now = 1000.15
    assert leases.due() == []  # nothing over: nothing comes along either
    mono.now = 1000.21
    renewals = leases.due()
    assert [(r.bucket_key, r.used) for r in renewals] == [("early", 1), ("late", 1)]  # not "idle"
    assert leases.due() == []  # "late" is on its way
    leases.renewed(renewals, [5, 4])
    early, late = leases._leases[("early", POLICY)], leases._leases[("late", POLICY)]
    assert early.deadline == pytest.approx(1000.4) and early.remaining == 5
    assert late.deadline == pytest.approx(1000.3) and late.remaining == 4  # its own tokens first
    assert late.successor == 4 and late.successor_deadline == pytest.approx(1000.4)


def test_a_successor_is_spent_when_the_lease_ends_or_runs_out_and_never_after_its_own_end() -> None:
    """The successor's tokens follow the lease's; none is spent past the successor's deadline."""
    mono = Monotonic(1000.0)
    leases = two_phases(mono)
    mono.now = 1000.21
    leases.renewed(leases.due(), [5, 2])
    for _ in range(4):
        assert leases.use("late", POLICY) == (True, 0)  # its own four tokens left
    assert leases.use("late", POLICY) == (True, 0)  # ran out before its end: the successor's
    mono.now = 1000.31
    assert leases.use("late", POLICY) == (True, 0)
    assert leases.use("late", POLICY) == (False, 6)  # spent: its admissions since the renewal
    mono.now = 1000.41
    assert leases.use("early", POLICY) == (False, 0)  # over, with no successor


def test_a_renewal_answered_after_a_drain_is_dropped() -> None:
    """A drain between a renewal's question and its answer leaves the table empty."""
    mono = Monotonic(1000.0)
    leases = two_phases(mono)
    mono.now = 1000.21
    renewals = leases.due()
    assert leases.drain() == {}  # their admissions ride on the renewal
    leases.renewed(renewals, [5, 5])
    assert not leases._leases


def test_a_lease_brought_along_whose_renewal_failed_ends_as_it_would_have() -> None:
    """Unanswered: "late" keeps its tokens to its end, and is renewed by a round trip after it."""
    mono = Monotonic(1000.0)
    leases = two_phases(mono)
    mono.now = 1000.21
    leases.renewal_failed(leases.due())
    assert leases.use("late", POLICY) == (True, 0)
    mono.now = 1000.31
    assert [(r.bucket_key, r.used) for r in leases.due()] == [("late", 1)]  # the first rode on the failed one


def test_a_token_given_back_never_moves_to_the_successor_before_it_gave_one() -> None:
    """A failed publish's token returns to the lease only if that lease gave one: none outlives its lease."""
    mono = Monotonic(1000.0)
    leases = Leases(0.2, mono)
    leases.take("early", 0, POLICY, 5)
    mono.now = 1000.11
    leases.take("late", 1, POLICY, 1)
    leases.use("early", POLICY)
    leases.use("late", POLICY)
    mono.now = 1000.21
    leases.renewed(leases.due(), [5, 3])
    leases.use("late", POLICY)  # the successor's first
    assert leases.give_back("late", POLICY)
    assert not leases.give_back("late", POLICY)  # the successor is whole again: the bucket takes it


def test_hot_keys_half_a_window_apart_come_to_renew_in_one_round_trip(store: Store) -> None:
    """Five keys leased half a window after five others: after one renewal, all renew together."""
    adm, counting, mono = make(store, "100/s", lease_window=0.1)
    first = [adm.context(f"first-{i}", None, "interactive", None) for i in range(5)]
    later = [adm.context(f"later-{i}", None, "interactive", None) for i in range(5)]
    for group in (first, later):
        for ctx in group:
            for _ in range(3):
                adm.decide(ctx, task_name="t")
        mono.now += 0.06  # "later" ends on the line after "first"
    assert counting.trips == 10
    mono.now = 1000.11  # "first" over, "later" ends at 1000.15
    asked = len(counting.requests)
    adm.decide(first[0], task_name="t")
    assert counting.trips == 11 and sum(r.renew for r in counting.requests[asked:]) == 9
    for when in (1000.16, 1000.19):
        mono.now = when
        for ctx in first + later:
            assert adm.decide(ctx, task_name="t").taken.leased  # type: ignore[union-attr]
    assert counting.trips == 11  # "later" went on on its successors
    mono.now = 1000.21
    asked = len(counting.requests)
    adm.decide(later[0], task_name="t")
    assert counting.trips == 12 and sum(r.renew for r in counting.requests[asked:]) == 9
    adm.flush_leases()
    assert store.metrics()["admitted"] == 10 * 3 + 1 + 2 * 10 + 1


def test_a_renewal_cut_off_leaves_the_lease_brought_along_to_be_renewed_after_its_end(store: Store) -> None:
    """An interrupt mid-renewal: the lease that came along is renewed by the first trip after its end."""
    adm, counting, mono = make(store, "100/s", lease_window=0.1)
    first, other, later = (
        adm.context(user, None, "interactive", None) for user in ("first", "other", "later")
    )
    for group in ((first, other), (later,)):
        for ctx in group:
            for _ in range(3):
                adm.decide(ctx, task_name="t")
        mono.now += 0.06
    mono.now = 1000.11  # "other" over and renewed along with "first"'s round trip, "later" along
    counting.interrupt = True
    with pytest.raises(KeyboardInterrupt):
        adm.decide(first, task_name="t")  # "later" came along
    counting.interrupt = False
    mono.now = 1000.16
    asked = len(counting.requests)
    adm.decide(first, task_name="t")
    assert [r.renew for r in counting.requests[asked:]] == [False, True]  # its own, and "later"'s
