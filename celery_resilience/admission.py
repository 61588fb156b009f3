"""Admission at enqueue time: who is calling, what limit applies, and what to do when over it.

Celery-free: the task layer turns a ``Verdict`` into publish options. One store round
trip per admission; when the store cannot be reached the caller keeps working (fail
open, the default) or gets an ``AdmissionUnavailable`` at once (fail closed), and the
store is left alone for ``store_retry_interval`` so that no publish waits on a dead
store twice in a row.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import math
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .bucket import BucketSpec, Decision
from .errors import AdmissionUnavailable, StoreUnavailable, Throttled
from .keys import ANONYMOUS, escape_part
from .load import LoadFactors
from .policy import Criticality, Severity, Strategy, StrategyKind
from .rates import Rate
from .settings import Limit, ResilienceSettings, TierPolicy
from .store.base import AdmitPolicy, AdmitRequest, Store, delay_for
from .store.metrics_fields import ADMITTED, PUBLISH_FAILED, STORE_UNAVAILABLE, outcome_field

__all__ = ["CallContext", "Verdict", "Admission", "SeveritySource", "RateMultiplier", "ConstantSeverity"]

logger = logging.getLogger("celery_resilience.admission")

_KEY_CACHE_SIZE = 65536


class SeveritySource(Protocol):
    """Tells how loaded the system is; backpressure and worker health plug in here."""

    def severity(self, queue: str | None) -> Severity: ...


class RateMultiplier(Protocol):
    """Scales admitted rates to the system's condition (the load monitor is one)."""

    def multiplier(self, queue: str | None = None, breaker: str | None = None) -> float: ...

    def factors(self, queue: str | None = None, breaker: str | None = None) -> LoadFactors:
        """Each factor of the multiplier on its own, to tell a refused caller why."""


class ConstantSeverity:
    def __init__(self, severity: Severity = Severity.NORMAL) -> None:
        self.value = severity

    def severity(self, queue: str | None) -> Severity:
        return self.value


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is asking and for what; travels to the worker in the message headers."""

    user_id: str | None
    tier: str
    request_type: str
    criticality: Criticality

    def as_header(self) -> dict[str, str | None]:
        return {"user_id": self.user_id, "tier": self.tier, "request_type": self.request_type}


class _Taken(NamedTuple):
    bucket_key: str
    shard: int
    policy: AdmitPolicy
    leased: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one publish. ``countdown``/``expires`` are seconds from now."""

    decision: Decision
    strategy: Strategy | None = None
    countdown: float = 0.0
    expires: float | None = None
    remaining: float = 0.0
    checked: bool = True
    taken: _Taken | None = field(default=None, compare=False, repr=False)
    """Where the admission took its token from, to give it back if the publish fails."""

    @property
    def label(self) -> str:
        if not self.checked:
            return "unchecked"
        if self.decision is Decision.THROTTLE and self.strategy is not None:
            return self.strategy.kind.value
        return self.decision.value


class _Plan(NamedTuple):
    """Everything a decision derives from settings, for one severity, tier, request type and multiplier."""

    strategy: Strategy
    policy: AdmitPolicy
    limit: Limit
    own_bucket: bool


@dataclass(slots=True)
class _Lease:
    """Tokens this process took from a bucket in advance, to admit locally until ``deadline``."""

    remaining: int
    deadline: float
    used: int = 0


# Leases must not survive a fork: parent and child would both spend the same tokens
# (and count the same pending admissions).
_all_admissions: weakref.WeakSet[Admission] = weakref.WeakSet()


def _forget_leases_in_child() -> None:
    for admission in list(_all_admissions):
        admission._leases.clear()
        admission._lease_lock = threading.Lock()
        # The parent reports what it had not counted yet; the child would count it twice.
        admission._unreported.clear()
        admission._unreported_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_leases_in_child)


def warn_if_evicting(store: Store) -> bool:
    """Warn, once per store, when Redis may evict keys: limits and breakers would silently reset."""
    check = getattr(store, "eviction_policy", None)
    policy = check() if check is not None else None
    if policy is None or policy == "noeviction":
        return False
    logger.warning(
        "the resilience store's Redis has maxmemory-policy %r: under memory pressure it may evict "
        "rate-limit buckets and breaker state (limits reset, breakers close). Give the store a "
        "database with room, or 'noeviction'.",
        policy,
    )
    return True


def _flush_at_exit(ref: weakref.ref[Admission]) -> None:
    admission = ref()
    if admission is not None and admission._store is not None:
        admission.flush_leases()


class Admission:
    """Admission decisions for one app.

    Hot keys lease tokens: on an allow, the store may hand over a few extra tokens
    (``resilience_lease_max_tokens``, sized so they last about ``resilience_lease_window``
    at the key's rate), and the process admits that key's next requests without a round
    trip. Leased tokens come out of the shared bucket, so the cluster never admits more
    than the limit; they are spent at most ``lease_window`` seconds after they were
    minted, so over any interval ``T`` a key is admitted at most
    ``rate x (T + lease_window) + burst + grace``. Keys whose rate mints less than one
    token per window never lease.
    """

    def __init__(
        self,
        settings: ResilienceSettings,
        store_factory: Callable[[], Store],
        severity: SeveritySource | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.severity: SeveritySource = severity or ConstantSeverity()
        self.load: RateMultiplier | None = None
        self.stats: Counter[str] = Counter()
        self._store_factory = store_factory
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._monotonic = monotonic
        self._store_down_until = 0.0
        # Counters the store could not take when they arose (admissions it missed, a lease's
        # admissions whose report failed), counted with the first decision it answers again.
        self._unreported: Counter[str] = Counter()
        self._unreported_lock = threading.Lock()  # publishing threads add while one reports
        # Everything below is derived from immutable settings; caching it keeps the hot
        # path to one dictionary lookup per part instead of rebuilding it per publish.
        self._plans: dict[tuple[Severity, str, str, float, bool], _Plan] = {}
        self._bucket_keys: dict[tuple[str | None, str, str | None], tuple[str, int]] = {}
        self._leases: dict[tuple[str, AdmitPolicy], _Lease] = {}
        self._lease_lock = threading.Lock()
        _all_admissions.add(self)
        atexit.register(_flush_at_exit, weakref.ref(self))

    @property
    def store(self) -> Store:
        """The store, opened on first use so that forked workers never share a connection."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = self._store_factory()
                    warn_if_evicting(self._store)
                store = self._store
        return store

    def context(
        self, user_id: object, tier: str | None, request_type: str | None, task_default: str | None
    ) -> CallContext:
        """Resolve the call's context; a wrong tier or request type is the caller's error, raised now."""
        settings = self.settings
        if user_id is not None and not isinstance(user_id, str | int):
            raise TypeError(f"user_id must be a string or an integer, got {type(user_id).__name__}")
        uid = None if user_id is None else str(user_id)
        for keyword, given in (("tier", tier), ("request_type", request_type)):
            if given is not None and (not isinstance(given, str) or not given):
                # An empty name is a bug in the caller (an unset field), not "the default".
                raise ValueError(f"{keyword} must be a non-empty name or None, got {given!r}")
        if tier is None and uid is not None and settings.tier_resolver is not None:
            tier = settings.tier_resolver(uid)
        tier = tier or settings.default_tier
        if tier not in settings.tiers:
            raise ValueError(f"unknown tier {tier!r}; configured tiers: {sorted(settings.tiers)}")
        request_type = request_type or task_default or settings.default_request_type
        criticality = settings.request_types.get(request_type)
        if criticality is None:
            raise ValueError(
                f"unknown request_type {request_type!r}; configured in resilience_request_types: "
                f"{sorted(settings.request_types)}"
            )
        return CallContext(uid, tier, request_type, criticality)

    def decide(
        self,
        ctx: CallContext,
        *,
        task_name: str,
        queue: str | None = None,
        breaker: str | None = None,
        refusable: bool = True,
    ) -> Verdict:
        """One admission decision; raises ``Throttled`` when the policy says reject.

        ``refusable=False`` is for a publish that must go out (the rest of a group whose
        first members are published): over the limit it is paced at its slot, however far.
        """
        settings = self.settings
        tier = settings.tiers[ctx.tier]
        severity = self.severity.severity(queue)
        multiplier = self.multiplier(tier, queue, breaker)
        plan = self._plans.get((severity, ctx.tier, ctx.request_type, multiplier, refusable))
        if plan is None:
            plan = self._plan(severity, tier, ctx, multiplier, refusable)
        strategy, policy, limit, own_bucket = plan
        bucket_key, shard = self._bucket_key(ctx, own_bucket)
        pending = 0
        if policy.lease:
            with self._lease_lock:
                lease = self._leases.get((bucket_key, policy))
                if lease is not None:
                    if lease.remaining > 0 and self._monotonic() < lease.deadline:
                        lease.remaining -= 1
                        lease.used += 1
                        return Verdict(Decision.ALLOW, taken=_Taken(bucket_key, shard, policy, True))
                    pending = lease.used
                    del self._leases[(bucket_key, policy)]
        request = AdmitRequest(bucket_key, shard, policy, policy.lease, pending)
        if self._monotonic() < self._store_down_until:
            return self._store_failed(ctx, task_name, None, policy.tier, pending)
        try:
            outcome = self.store.admit(request)
        except StoreUnavailable as error:
            self._store_down_until = self._monotonic() + settings.store_retry_interval
            return self._store_failed(ctx, task_name, error, policy.tier, pending)
        if self._unreported:
            self._report_unreported()

        if outcome.leased:
            self._take_lease(bucket_key, policy, outcome.leased)
        taken = _Taken(bucket_key, shard, policy, False)
        if outcome.decision is not Decision.THROTTLE:
            return Verdict(outcome.decision, remaining=outcome.remaining, taken=taken)
        if not outcome.reserved:
            retry_after = outcome.retry_after
            if strategy.kind is StrategyKind.REJECT_WITH_BACKOFF:
                retry_after = max(retry_after, strategy.seconds)
            shrunk = self._shrinking_factors(queue, breaker) if multiplier < 1.0 else {}
            limit_text = _limit_text(limit, policy, shrunk)
            raise Throttled(
                retry_after,
                task_name=task_name,
                user_id=ctx.user_id,
                tier=ctx.tier,
                request_type=ctx.request_type,
                reason=(
                    f"{limit_text} exceeded, policy {strategy}"
                    if strategy.kind is StrategyKind.REJECT_WITH_BACKOFF
                    else f"{limit_text} exceeded beyond the {settings.max_throttle_delay:g}s pacing horizon"
                ),
                factors=shrunk,
            )
        if strategy.kind is StrategyKind.DELAY:
            return Verdict(
                Decision.THROTTLE,
                strategy,
                countdown=delay_for(outcome, strategy.seconds),
                remaining=outcome.remaining,
                taken=taken,
            )
        return Verdict(
            Decision.THROTTLE,
            strategy,
            countdown=outcome.retry_after,
            expires=outcome.retry_after + strategy.seconds,
            remaining=outcome.remaining,
            taken=taken,
        )

    def give_back(self, verdict: Verdict) -> None:
        """The publish this verdict admitted failed: return its token (to the lease it came from,
        else to the bucket) or its grace, and count the failure, so that a broken broker does
        not spend the user's allowance."""
        taken = verdict.taken
        if taken is None:
            return
        to_store = True
        if taken.leased:
            with self._lease_lock:
                lease = self._leases.get((taken.bucket_key, taken.policy))
                if lease is not None and lease.used > 0:
                    lease.used -= 1  # never reported as admitted
                    lease.remaining += 1
                    to_store = False
        try:
            if to_store:
                grace = verdict.decision is Decision.ALLOW_WITH_GRACE
                self.store.refund(taken.bucket_key, taken.policy.spec, grace)
            self.store.count({PUBLISH_FAILED: 1}, taken.shard)
        except StoreUnavailable:
            self.stats[STORE_UNAVAILABLE] += 1
            with self._unreported_lock:
                self._unreported[PUBLISH_FAILED] += 1

    def _bucket_key(self, ctx: CallContext, own_bucket: bool) -> tuple[str, int]:
        cache_key = (ctx.user_id, ctx.tier, ctx.request_type if own_bucket else None)
        found = self._bucket_keys.get(cache_key)
        if found is not None:
            return found
        who = escape_part(ctx.user_id) if ctx.user_id is not None else f"{ANONYMOUS}.{escape_part(ctx.tier)}"
        scope = f"{who}:{escape_part(ctx.request_type)}" if own_bucket else who
        found = self.store.keys.bucket(scope)
        if len(self._bucket_keys) >= _KEY_CACHE_SIZE:
            self._bucket_keys.clear()
        self._bucket_keys[cache_key] = found
        return found

    def _plan(
        self, severity: Severity, tier: TierPolicy, ctx: CallContext, multiplier: float, refusable: bool
    ) -> _Plan:
        """Work out (once per severity, tier, request type, multiplier and whether the publish
        may be refused) what a decision needs."""
        settings = self.settings
        strategy = settings.strategies.choose(severity, ctx.tier, ctx.request_type, ctx.criticality)
        horizon = settings.max_throttle_delay
        if not refusable:
            horizon = math.inf
            if not strategy.kind.paces:
                strategy = Strategy(StrategyKind.DELAY, 0.0)
        limit, own_bucket = tier.limit_for(ctx.request_type)
        base = limit.rate.per_second
        refill = base * multiplier
        if tier.minimum_guaranteed is not None:
            refill = max(refill, tier.minimum_guaranteed.per_second)
        if tier.maximum_burst is not None:
            refill = min(refill, tier.maximum_burst.per_second)
        # The burst shrinks with the rate: under load a full bucket would otherwise let every
        # user through a short spike untouched. Never below one call, so the tier still serves.
        scale = min(1.0, refill / base) if base > 0 else 1.0
        capacity = max(1.0, limit.burst * scale)
        spec = BucketSpec(
            capacity=capacity,
            refill=refill,
            grace_limit=limit.grace,
            grace_period=limit.grace_period,
            # Never more than a full bucket can spare: a full bucket admits every class.
            reserve=min(settings.criticality_reserve[ctx.criticality] * capacity, capacity - 1.0),
            grace_allowed=not ctx.criticality.sheddable,
            horizon=horizon if strategy.kind.paces else 0.0,
        )
        lease = min(settings.lease_max_tokens, math.floor(refill * settings.lease_window))
        policy = AdmitPolicy(
            spec,
            tier=ctx.tier,
            strategy=strategy.kind.value,
            min_delay=strategy.seconds if strategy.kind is StrategyKind.DELAY else 0.0,
            lease=lease if lease >= 1 else 0,
        )
        plan = _Plan(strategy, policy, limit, own_bucket)
        if len(self._plans) >= _KEY_CACHE_SIZE:
            self._plans.clear()
        self._plans[(severity, ctx.tier, ctx.request_type, multiplier, refusable)] = plan
        return plan

    def _take_lease(self, bucket_key: str, policy: AdmitPolicy, tokens: int) -> None:
        with self._lease_lock:
            if len(self._leases) >= _KEY_CACHE_SIZE:
                self._flush_leases_locked()
            deadline = self._monotonic() + self.settings.lease_window
            self._leases[(bucket_key, policy)] = _Lease(tokens, deadline)

    def flush_leases(self) -> None:
        """Report admissions made from leases to the metrics and drop every lease."""
        with self._lease_lock:
            self._flush_leases_locked()

    def _flush_leases_locked(self) -> None:
        per_shard: dict[int, dict[str, float]] = {}
        for (bucket_key, policy), lease in self._leases.items():
            if lease.used:
                fields = per_shard.setdefault(self.store.keys.shard_of_key(bucket_key), {})
                name = outcome_field(ADMITTED, policy.tier)
                fields[name] = fields.get(name, 0) + lease.used
        self._leases.clear()
        for shard, fields in per_shard.items():
            try:
                self.store.count(fields, shard)
            except StoreUnavailable:
                self.stats[STORE_UNAVAILABLE] += 1
                with self._unreported_lock:
                    self._unreported.update(fields)

    def _shrinking_factors(self, queue: str | None, breaker: str | None) -> dict[str, float]:
        """The adaptive factors below 1 that apply to this publish (asked only on a refusal)."""
        if self.load is None:
            return {}
        factors = dataclasses.asdict(self.load.factors(queue, breaker))
        return {name: round(value, 4) for name, value in factors.items() if value < 1.0}

    def multiplier(self, policy: TierPolicy, queue: str | None = None, breaker: str | None = None) -> float:
        """Adaptive factor applied to the baseline rate, clamped per tier afterwards."""
        return self.load.multiplier(queue, breaker) if self.load is not None else 1.0

    def _report_unreported(self) -> None:
        """The store is back: count what it missed (its outage, leases' admissions) in the metrics."""
        with self._unreported_lock:
            fields = dict(self._unreported)
            self._unreported.clear()
        if not fields:
            return  # another thread reported them
        try:
            self.store.count(fields)
        except StoreUnavailable:
            with self._unreported_lock:
                self._unreported.update(fields)

    def _store_failed(
        self, ctx: CallContext, task_name: str, error: StoreUnavailable | None, tier: str, pending: int
    ) -> Verdict:
        self.stats[STORE_UNAVAILABLE] += 1
        with self._unreported_lock:
            self._unreported[STORE_UNAVAILABLE] += 1
            if pending:
                # Admissions made from the lease just given up: their report rode on this call.
                self._unreported[outcome_field(ADMITTED, tier)] += pending
        if error is not None:
            logger.warning(
                "resilience store unreachable (%s); admission fails %s for %.3gs",
                error,
                "open" if self.settings.fail_open else "closed",
                self.settings.store_retry_interval,
            )
        if self.settings.fail_open:
            return Verdict(Decision.ALLOW, checked=False)
        raise AdmissionUnavailable(
            self.settings.store_retry_interval,
            task_name=task_name,
            user_id=ctx.user_id,
            tier=ctx.tier,
            request_type=ctx.request_type,
            reason="the resilience store is unreachable and admission fails closed",
        )


def _limit_text(limit: Limit, policy: AdmitPolicy, shrunk: Mapping[str, float]) -> str:
    """The limit a refused caller hit: as configured, or as the adaptive factors made it."""
    if not shrunk:
        return f"rate limit {limit.rate}"
    now = Rate(round(policy.spec.refill * limit.rate.period, 2), limit.rate.period)
    why = ", ".join(f"{name} x{value:.2f}" for name, value in sorted(shrunk.items()))
    return f"rate limit {limit.rate} (now {now}, burst {policy.spec.capacity:g}: adapted by {why})"
