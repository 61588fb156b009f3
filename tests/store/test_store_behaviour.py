"""One behavioural suite, run against MemoryStore and RedisStore alike."""

from __future__ import annotations

import dataclasses
import random

import pytest

from celery_resilience.admission.bucket import BucketSpec, Decision
from celery_resilience.admission.gate import Admission
from celery_resilience.admission.port import AdmitPolicy, AdmitRequest
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store import MemoryStore, Store
from celery_resilience.store.keys import KeySpace, escape_part
from celery_resilience.store.redis import RedisStore
from celery_resilience.testing import FakeClock

SPEC = BucketSpec(capacity=2, refill=1.0, grace_limit=1, grace_period=60, horizon=5)


def request(
    keys: KeySpace, scope: str = "u", spec: BucketSpec = SPEC, strategy: str = "delay"
) -> AdmitRequest:
    key, shard = keys.bucket(scope)
    return AdmitRequest(key, shard, AdmitPolicy(spec, tier="free", strategy=strategy, min_delay=1.0))


def test_burst_grace_then_paced_reservations(store: Store, keys: KeySpace) -> None:
    """Burst, grace, then reserved slots one refill period apart, then refusal beyond the horizon."""
    outcomes = [store.admit(request(keys)) for _ in range(10)]
    decisions = [o.decision for o in outcomes]
    assert decisions[:3] == [Decision.ALLOW, Decision.ALLOW, Decision.ALLOW_WITH_GRACE]
    assert all(d is Decision.THROTTLE for d in decisions[3:])
    assert [o.reserved for o in outcomes[3:]] == [True] * 5 + [False] * 2
    assert [o.retry_after for o in outcomes[3:8]] == pytest.approx([1, 2, 3, 4, 5])


def test_a_refund_gives_back_a_token_or_grace_never_more(store: Store, keys: KeySpace) -> None:
    """A failed publish returns what it took: a token (not past a full bucket) or its grace."""
    req = request(keys, spec=BucketSpec(capacity=2, refill=0.001, grace_limit=1, grace_period=60))
    assert [store.admit(req).decision for _ in range(3)] == [
        Decision.ALLOW,
        Decision.ALLOW,
        Decision.ALLOW_WITH_GRACE,
    ]
    store.refund(req.bucket_key, req.policy.spec, grace=True)
    assert store.admit(req).decision is Decision.ALLOW_WITH_GRACE
    for _ in range(3):
        store.refund(req.bucket_key, req.policy.spec, grace=False)
    assert [store.admit(req).decision for _ in range(3)] == [
        Decision.ALLOW,
        Decision.ALLOW,
        Decision.THROTTLE,
    ]


def test_refill_follows_the_store_clock(store: Store, keys: KeySpace, clock: FakeClock) -> None:
    """Tokens come back at the rate as the store's clock moves."""
    spec = BucketSpec(capacity=1, refill=0.5, grace_limit=0, grace_period=60)
    assert store.admit(request(keys, spec=spec)).decision is Decision.ALLOW
    clock.advance(1.0)
    throttled = store.admit(request(keys, spec=spec))
    assert throttled.decision is Decision.THROTTLE and throttled.retry_after == pytest.approx(1.0)
    clock.advance(1.0)
    assert store.admit(request(keys, spec=spec)).decision is Decision.ALLOW


def test_metrics_are_counted_in_the_same_operation(store: Store, keys: KeySpace) -> None:
    """Each admission lands in the minute's counters: requests, outcome, strategy, delay, tier."""
    for _ in range(8):
        store.admit(request(keys))
    reject = BucketSpec(capacity=2, refill=1.0, grace_limit=1, grace_period=60)
    store.admit(request(keys, spec=reject, strategy="reject_with_backoff"))
    m = store.metrics()
    assert m["requests"] == 9 and m["tier:free"] == 9
    assert (m["admitted"], m["graced"], m["throttled"]) == (2, 1, 6)
    assert m["throttled:delay"] == 5 and m["throttled:reject_with_backoff"] == 1
    assert m["delay_total"] == pytest.approx(1 + 2 + 3 + 4 + 5)


def test_a_renewal_takes_spare_tokens_and_admits_nothing(store: Store, keys: KeySpace) -> None:
    """A renewal takes tokens only while a request's worth stays, and counts only what it reports."""
    spec = BucketSpec(capacity=5, refill=0.001, grace_limit=1, grace_period=60)
    rider = request(keys, "rider", BucketSpec(capacity=10, refill=1.0, grace_limit=0, grace_period=60))
    renewal = dataclasses.replace(request(keys, spec=spec), lease=2, pending=3, renew=True)
    leased = [store.admit_many([rider, renewal])[1] for _ in range(3)]
    assert [outcome.leased if outcome else None for outcome in leased] == [2, 2, 0]
    # One token is left for a request; a renewal never dips into grace or throttles.
    assert [store.admit(request(keys, spec=spec)).decision for _ in range(2)] == [
        Decision.ALLOW,
        Decision.ALLOW_WITH_GRACE,
    ]
    m = store.metrics()
    assert m["admitted"] == 3 * 1 + 3 * 3 + 1  # the riders, the reported lease admissions, the request
    assert m["requests"] == 3 + 3 * 3 + 2 and m["graced"] == 1 and m.get("throttled", 0) == 0


def test_metrics_keys_expire(redis_store: RedisStore, keys: KeySpace) -> None:
    """Every per-minute hash the script creates has the configured TTL."""
    redis_store.admit(request(keys))
    found = list(redis_store.client.scan_iter(match=f"{keys.prefix}:*metrics*"))
    assert found and all(0 < redis_store.client.ttl(k) <= 7200 for k in found)


def test_count_adds_to_the_minute_and_minutes_are_separate(store: Store, clock: FakeClock) -> None:
    """Counters outside admission accumulate per minute, and a new minute starts from zero."""
    store.count({"expired": 1})
    store.count({"expired": 2, "ungated": 1})
    assert store.metrics()["expired"] == 3
    clock.advance(60)
    store.count({"expired": 1})
    assert store.metrics()["expired"] == 1


def test_hostile_user_ids_get_separate_buckets(store: Store, keys: KeySpace, clock: FakeClock) -> None:
    """Ids built to collide (':' separators, braces, globs, escapes, a megabyte) stay independent."""
    settings = ResilienceSettings.from_conf(
        {
            "resilience_tiers": {"t": {"rate": "1/h", "burst": 1}},
            "resilience_throttle_strategies": [{"strategy": "reject_with_backoff"}],
        }
    )
    adm = Admission(settings.admission, lambda: store)
    hostile = [
        "a:b",
        "a",
        "b",
        "{a}",
        "*",
        "a*",
        "%2A",
        "~anonymous",
        "",
        "\n",
        "é",
        "x" * 1_000_000,
        "x" * 999_999,
    ]
    for uid in hostile:
        verdict = adm.decide(adm.context(uid, None, "interactive", None), task_name="t")
        assert verdict.decision is Decision.ALLOW, f"user id {uid[:20]!r} found its bucket already used"
    for uid in hostile:
        with pytest.raises(Exception, match="throttled"):
            adm.decide(adm.context(uid, None, "interactive", None), task_name="t")


def test_purge_removes_everything_in_the_key_space(store: Store, keys: KeySpace) -> None:
    """Operators (and tests) can clear all state under the prefix."""
    store.admit(request(keys, "a"))
    store.admit(request(keys, "b"))
    assert store.purge() >= 3
    assert store.admit(request(keys, "a")).decision is Decision.ALLOW
    metrics = store.metrics()
    assert (metrics["requests"], metrics["tier:free"], metrics["admitted"]) == (1, 1, 1)
    assert "graced" not in metrics


def test_memory_and_redis_agree_on_a_random_workload(
    redis_store: RedisStore, keys: KeySpace, clock: FakeClock
) -> None:
    """The Lua script and the Python algorithm give the same answers, step by step."""
    memory = MemoryStore(keys, clock=clock)
    rng = random.Random(20261122)
    specs = [
        BucketSpec(capacity=3, refill=0.7, grace_limit=2, grace_period=10, horizon=4),
        BucketSpec(capacity=5, refill=2.5, grace_limit=0, grace_period=1, reserve=1.0, grace_allowed=False),
        BucketSpec(capacity=1, refill=0.01, grace_limit=1, grace_period=30),
    ]
    for _ in range(400):
        clock.advance(rng.choice([0.0, 0.0, 0.05, 0.3, 1.0, 7.0]))
        # Each bucket keeps one spec: state that expired in Redis (real time) and in memory
        # (the fake clock) is then indistinguishable from a fresh bucket in both.
        user = rng.randrange(3)
        req = request(keys, ["u1", "u2", "u:3"][user], specs[user])
        if rng.random() < 0.15:  # a publish failed: its token or grace comes back
            grace = rng.random() < 0.5
            memory.refund(req.bucket_key, req.policy.spec, grace)
            redis_store.refund(req.bucket_key, req.policy.spec, grace)
        shape = rng.random()
        if shape < 0.2:  # a lease's renewal riding on another key's round trip
            other = request(keys, "rider", specs[0])
            lease, pending = rng.randrange(1, 3), rng.randrange(3)
            renewal = dataclasses.replace(req, lease=lease, pending=pending, renew=True)
            expected = memory.admit_many([other, renewal])[1]
            actual = redis_store.admit_many([other, renewal])[1]
            assert expected is not None and actual is not None
            assert actual.leased == expected.leased
        else:
            if shape < 0.4:  # an admission asking for a lease
                req = dataclasses.replace(req, lease=rng.randrange(1, 3))
            expected, actual = memory.admit(req), redis_store.admit(req)
            assert actual.leased == expected.leased
        assert actual.decision is expected.decision
        assert actual.reserved == expected.reserved
        assert actual.grace_used == expected.grace_used
        assert actual.remaining == pytest.approx(expected.remaining, abs=1e-9)
        assert actual.retry_after == pytest.approx(expected.retry_after, abs=1e-9)
    assert redis_store.metrics() == pytest.approx(memory.metrics())


def test_memory_store_is_thread_safe(keys: KeySpace, clock: FakeClock) -> None:
    """Many threads on one bucket never admit more than it holds."""
    from concurrent.futures import ThreadPoolExecutor

    store = MemoryStore(keys, clock=clock)
    spec = BucketSpec(capacity=50, refill=1e-6, grace_limit=7, grace_period=60)
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda _: store.admit(request(keys, spec=spec)), range(500)))
    admitted = sum(o.decision is not Decision.THROTTLE for o in outcomes)
    assert admitted == 57


def test_escaped_scope_is_what_the_key_holds(keys: KeySpace) -> None:
    """The bucket key of a hostile id is the escaped id under the prefix, nothing else."""
    key, _ = keys.bucket(escape_part("a:{b}*"))
    assert key.endswith(":bucket:a%3A%7Bb%7D%2A")
    assert key.startswith(keys.prefix + ":{s")
