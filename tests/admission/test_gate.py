"""Admission decisions: context, limits per user and tier, strategies, and a store that fails."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from celery_resilience import AdmissionUnavailable, Throttled
from celery_resilience.admission.bucket import Decision, Outcome
from celery_resilience.admission.gate import Admission, ConstantSeverity
from celery_resilience.admission.port import AdmitRequest
from celery_resilience.errors import StoreUnavailable
from celery_resilience.load.signals import LoadFactors, Severity
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock
from tests.conftest import Monotonic, SplitClock

TIERS = {
    "free": {"rate": "60/m", "burst": 2, "grace": 1},
    "enterprise": {
        "rate": "600/m",
        "burst": 5,
        "grace": 0,
        "request_types": {"batch": {"rate": "6/m", "burst": 1}},
    },
}


def make(clock: FakeClock, severity: Severity = Severity.NORMAL, **conf: Any) -> Admission:
    conf.setdefault("tiers", TIERS)
    conf.setdefault("default_tier", "free")
    s = ResilienceSettings.from_conf({f"resilience_{k}": v for k, v in conf.items()})
    store = MemoryStore(KeySpace("t", 4), clock=clock)
    return Admission(s.admission, lambda: store, severity=ConstantSeverity(severity))


def admit(
    adm: Admission, user: str | None, tier: str | None = None, request_type: str = "interactive"
) -> Any:
    ctx = adm.context(user, tier, request_type, None)
    return adm.decide(ctx, task_name="t.task")


def test_context_resolves_tier_explicitly_by_resolver_or_by_default(clock: FakeClock) -> None:
    """Explicit tier wins; else the resolver; else the default tier."""
    adm = make(clock, tier_resolver=lambda uid: "enterprise" if uid.startswith("corp") else None)
    assert adm.context("corp-1", None, None, None).tier == "enterprise"
    assert adm.context("corp-1", "free", None, None).tier == "free"
    assert adm.context("someone", None, None, None).tier == "free"
    assert adm.context(42, None, None, None).user_id == "42"


def test_a_resolved_context_is_kept_unless_the_resolver_may_answer_otherwise(clock: FakeClock) -> None:
    """Contexts are reused per caller; a tier resolver is asked on every call, and 1 and True stay apart."""
    upgraded: set[str] = set()
    adm = make(clock, tier_resolver=lambda uid: "enterprise" if uid in upgraded else None)
    assert adm.context("u", None, None, None).tier == "free"
    upgraded.add("u")
    assert adm.context("u", None, None, None).tier == "enterprise"
    plain = make(clock)
    assert plain.context("u", None, None, None) is plain.context("u", None, None, None)
    assert plain.context(1, None, None, None).user_id == "1"
    assert plain.context(True, None, None, None).user_id == "True"
    with pytest.raises(TypeError, match="user_id must be a string or an integer"):
        plain.context(["u"], None, None, None)
    with pytest.raises(ValueError, match="tier must be a non-empty name"):
        plain.context("u", ["free"], None, None)  # type: ignore[arg-type]


def test_request_type_defaults_to_the_task_then_the_setting(clock: FakeClock) -> None:
    """Per call beats the task attribute, which beats resilience_default_request_type."""
    adm = make(clock)
    assert adm.context("u", None, None, None).request_type == "default"
    assert adm.context("u", None, None, "batch").request_type == "batch"
    assert adm.context("u", None, "interactive", "batch").request_type == "interactive"


@pytest.mark.parametrize(
    ("args", "message"),
    [(("u", "gold", None), "unknown tier 'gold'"), (("u", None, "chat"), "unknown request_type 'chat'")],
)
def test_unknown_tier_or_request_type_is_the_callers_error(
    clock: FakeClock, args: tuple[Any, ...], message: str
) -> None:
    """A typo at the call site raises at once, listing what exists."""
    with pytest.raises(ValueError, match=message):
        make(clock).context(args[0], args[1], args[2], None)


def test_user_id_of_a_wrong_type_is_refused(clock: FakeClock) -> None:
    """Only strings and integers identify users; anything else would hash unpredictably."""
    with pytest.raises(TypeError, match="user_id"):
        make(clock).context(["u"], None, None, None)


def test_users_do_not_share_buckets(clock: FakeClock) -> None:
    """One user exhausting the limit leaves another untouched."""
    adm = make(clock)
    decisions = [admit(adm, "alice").decision for _ in range(4)]
    assert decisions[:3] == [Decision.ALLOW, Decision.ALLOW, Decision.ALLOW_WITH_GRACE]
    assert decisions[3] is Decision.THROTTLE
    assert admit(adm, "bob").decision is Decision.ALLOW


def test_tiers_have_their_own_limits(clock: FakeClock) -> None:
    """An enterprise user gets its bigger burst; a free user its smaller one."""
    adm = make(clock)
    free = [admit(adm, "f").decision for _ in range(3)]
    ent = [admit(adm, "e", "enterprise").decision for _ in range(5)]
    assert free.count(Decision.ALLOW) == 2
    assert ent.count(Decision.ALLOW) == 5


def test_a_request_type_with_its_own_limit_has_its_own_bucket(clock: FakeClock) -> None:
    """Enterprise batch work is limited apart from the same user's interactive work."""
    adm = make(clock)
    assert admit(adm, "e", "enterprise", "batch").decision is Decision.ALLOW
    assert admit(adm, "e", "enterprise", "batch").decision is Decision.THROTTLE
    assert admit(adm, "e", "enterprise", "interactive").decision is Decision.ALLOW


def test_anonymous_callers_share_one_bucket_per_tier(clock: FakeClock) -> None:
    """Calls without a user id are limited together, never unlimited."""
    adm = make(clock)
    decisions = [admit(adm, None).decision for _ in range(4)]
    assert decisions[-1] is Decision.THROTTLE
    assert admit(adm, None, "enterprise").decision is Decision.ALLOW


def test_delay_paces_each_throttled_call_one_slot_later(clock: FakeClock) -> None:
    """NORMAL load: DELAY publishes with a countdown of at least 1 s, growing by one token period."""
    adm = make(clock)
    for _ in range(3):
        admit(adm, "u")
    first, second = admit(adm, "u"), admit(adm, "u")
    assert first.strategy is not None and first.strategy.kind.value == "delay"
    assert first.countdown == pytest.approx(1.0)
    assert second.countdown == pytest.approx(2.0)
    assert first.expires is None
    assert first.label == "delay"


def test_queue_with_timeout_sets_an_expiry_after_the_slot(clock: FakeClock) -> None:
    """HIGH load: the request waits for its slot and expires 10 s after it."""
    adm = make(clock, severity=Severity.HIGH)
    for _ in range(3):
        admit(adm, "u")
    verdict = admit(adm, "u")
    assert verdict.label == "queue_with_timeout"
    assert verdict.countdown == pytest.approx(1.0)
    assert verdict.expires == pytest.approx(11.0)


def test_critical_load_rejects_with_backoff(clock: FakeClock) -> None:
    """CRITICAL load: a free user's excess is refused with the 30 s back-off, and nothing is reserved."""
    adm = make(clock, severity=Severity.CRITICAL)
    for _ in range(3):
        admit(adm, "u")
    with pytest.raises(Throttled) as caught:
        admit(adm, "u")
    assert caught.value.retry_after == 30
    assert caught.value.user_id == "u" and caught.value.tier == "free"
    clock.advance(1.0)
    assert admit(adm, "u").decision is Decision.ALLOW


def test_pacing_beyond_the_horizon_rejects_instead(clock: FakeClock) -> None:
    """Delays are bounded: once the next slot is further than the horizon, the caller is told to back off."""
    adm = make(clock, max_throttle_delay=2.5)
    for _ in range(3):
        admit(adm, "u")
    assert admit(adm, "u").countdown == pytest.approx(1.0)
    assert admit(adm, "u").countdown == pytest.approx(2.0)
    with pytest.raises(Throttled, match="pacing horizon") as caught:
        admit(adm, "u")
    assert caught.value.retry_after == pytest.approx(3.0)


def test_sheddable_work_is_refused_first(clock: FakeClock) -> None:
    """When a bucket runs low, batch (sheddable) work is throttled while critical work still passes."""
    adm = make(clock, tiers={"t": {"rate": "1/h", "burst": 10}}, default_tier="t")
    for _ in range(8):
        admit(adm, "u", request_type="critical_business")
    with pytest.raises(Throttled):
        admit(adm, "u", request_type="batch")
    assert admit(adm, "u", request_type="critical_business").decision is Decision.ALLOW


def test_adapted_rate_is_clamped_to_minimum_guaranteed(clock: FakeClock) -> None:
    """However low the adaptive factor, a tier keeps its minimum_guaranteed rate."""

    tiers = {"t": {"rate": "60/s", "burst": 1, "minimum_guaranteed": "30/s"}}
    reject = [{"strategy": "reject_with_backoff", "seconds": 0}]
    s = ResilienceSettings.from_conf({"resilience_tiers": tiers, "resilience_throttle_strategies": reject})
    store = MemoryStore(KeySpace("t", 1), clock=clock)
    starved = FixedFactor()
    starved.factor = 0.0001
    adm = Admission(s.admission, lambda: store, load=starved)
    admit(adm, "u")
    with pytest.raises(Throttled) as caught:
        admit(adm, "u")
    assert caught.value.retry_after == pytest.approx(1 / 30)


class FixedFactor:
    """An adaptive factor the test sets (the load monitor's place)."""

    factor = 1.0

    def multiplier(self, queue: str | None = None, breaker: str | None = None) -> float:
        return self.factor

    def factors(self, queue: str | None = None, breaker: str | None = None) -> LoadFactors:
        return LoadFactors(resources=self.factor)


def immediate_admissions(adm: Admission, user: str) -> int:
    """How many calls a fresh user gets through at one instant before the first refusal."""
    count = 0
    while True:
        try:
            admit(adm, user)
        except Throttled:
            return count
        count += 1
        assert count < 1000


@pytest.mark.parametrize(
    ("factor", "tier", "expected"),
    [
        (1.0, {"rate": "60/m", "burst": 10}, 10),
        (0.3, {"rate": "60/m", "burst": 10}, 3),
        (0.6, {"rate": "60/m", "burst": 10}, 6),
        # minimum_guaranteed holds the rate at half, so the burst keeps half too
        (0.1, {"rate": "60/m", "burst": 10, "minimum_guaranteed": "30/m"}, 5),
        # never below one call
        (0.01, {"rate": "60/m", "burst": 10}, 1),
    ],
)
def test_the_burst_shrinks_with_the_adapted_rate(
    clock: FakeClock, factor: float, tier: dict[str, Any], expected: int
) -> None:
    """Under load a user's burst shrinks with the rate, so a full bucket cannot carry a spike untouched."""
    reject = [{"strategy": "reject_with_backoff", "seconds": 0}]
    s = ResilienceSettings.from_conf(
        {"resilience_tiers": {"t": tier}, "resilience_throttle_strategies": reject}
    )
    store = MemoryStore(KeySpace("t", 1), clock=clock)
    load = FixedFactor()
    adm = Admission(s.admission, lambda: store, load=load)
    load.factor = factor
    assert immediate_admissions(adm, "u") == expected


def test_a_bucket_emptied_under_load_refills_to_the_full_burst_once_load_passes(clock: FakeClock) -> None:
    """The shrunken burst is a ceiling while the load lasts: once it passes, the full burst refills."""
    reject = [{"strategy": "reject_with_backoff", "seconds": 0}]
    tiers = {"t": {"rate": "60/m", "burst": 10}}
    s = ResilienceSettings.from_conf({"resilience_tiers": tiers, "resilience_throttle_strategies": reject})
    store = MemoryStore(KeySpace("t", 1), clock=clock)
    load = FixedFactor()
    adm = Admission(s.admission, lambda: store, load=load)
    load.factor = 0.3
    assert immediate_admissions(adm, "u") == 3
    load.factor = 1.0
    clock.advance(60)
    assert immediate_admissions(adm, "u") == 10


def test_sheddable_work_is_admitted_by_a_full_bucket_of_one(clock: FakeClock) -> None:
    """The reserve never exceeds what a full bucket can spare, so burst 1 still serves batch work."""
    adm = make(clock, tiers={"t": {"rate": "1/h", "burst": 1}}, default_tier="t")
    assert admit(adm, "u", request_type="batch").decision is Decision.ALLOW


class DeadStore:
    """A store whose server never answers: every operation raises as RedisStore does."""

    def __init__(self) -> None:
        self.calls = 0
        self.keys = KeySpace("dead", 1)

    def user_bucket(self, user_id: str | None, tier: str, request_type: str | None) -> tuple[str, int]:
        return self.keys.user_bucket(user_id, tier, request_type)

    def admit(self, request: AdmitRequest) -> Outcome:
        self.calls += 1
        raise StoreUnavailable("store did not answer: timed out")

    def admit_many(self, requests: Sequence[AdmitRequest]) -> list[Outcome | None]:
        self.calls += 1
        raise StoreUnavailable("store did not answer: timed out")

    def refund(self, bucket_key: str, spec: object, grace: bool) -> None:
        raise StoreUnavailable("down")

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        raise StoreUnavailable("down")

    def metrics(self, minute: int | None = None) -> dict[str, float]:
        raise StoreUnavailable("down")

    def now(self) -> float:
        return 0.0

    def purge(self) -> int:
        return 0

    def close(self) -> None:
        return None


def test_store_down_fails_open_warns_counts_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    """Fail open: allowed unchecked, one warning, counted, and the dead store left alone for the interval."""
    s = ResilienceSettings.from_conf({"resilience_store_retry_interval": 5})
    dead, mono = DeadStore(), Monotonic()
    adm = Admission(
        s.admission, lambda: dead, retry_interval=s.store_retry_interval, clock=SplitClock(FakeClock(), mono)
    )
    ctx = adm.context("u", None, None, None)
    with caplog.at_level(logging.WARNING, "celery_resilience"):
        verdicts = [adm.decide(ctx, task_name="t") for _ in range(3)]
    assert all(v.decision is Decision.ALLOW and not v.checked and v.label == "unchecked" for v in verdicts)
    assert dead.calls == 1
    assert adm.stats["store_unavailable"] == 3
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    mono.now += 5.1
    adm.decide(ctx, task_name="t")
    assert dead.calls == 2


def test_store_down_fails_closed_when_configured() -> None:
    """Fail closed: the caller gets AdmissionUnavailable, a Throttled it can retry after the interval."""
    s = ResilienceSettings.from_conf({"resilience_admission_on_store_failure": "closed"})
    adm = Admission(s.admission, DeadStore, retry_interval=s.store_retry_interval)
    with pytest.raises(AdmissionUnavailable) as caught:
        adm.decide(adm.context("u", None, None, None), task_name="t")
    assert isinstance(caught.value, Throttled)
    assert caught.value.retry_after == s.store_retry_interval


def test_admissions_missed_during_an_outage_reach_the_metrics_when_the_store_returns(
    clock: FakeClock,
) -> None:
    """Fail-open decisions are counted locally, then reported as store_unavailable once it answers."""
    s = ResilienceSettings.from_conf({"resilience_store_retry_interval": 1})
    live = MemoryStore(KeySpace("t", 1), clock=clock)
    current: list[object] = [DeadStore()]
    mono = Monotonic()
    adm = Admission(
        s.admission,
        lambda: current[0],  # type: ignore[arg-type,return-value]
        retry_interval=s.store_retry_interval,
        clock=SplitClock(clock, mono),
    )
    ctx = adm.context("u", None, None, None)
    for _ in range(3):
        adm.decide(ctx, task_name="t")
    current[0] = live
    mono.now += 2
    adm.decide(ctx, task_name="t")
    assert live.metrics()["store_unavailable"] == 3
