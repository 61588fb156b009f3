"""Admission at enqueue time: who is calling, what limit applies, and what to do when over it.

Celery-free: the task layer turns a ``Verdict`` into publish options. One store round
trip per admission (none for a key holding a lease); when the store cannot be reached
the caller keeps working (fail open, the default) or gets an ``AdmissionUnavailable`` at
once (fail closed), and the store is left alone for ``store_retry_interval`` so that no
publish waits on a dead store twice in a row.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, cast

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import AdmissionUnavailable, StoreUnavailable, Throttled
from ..load.signals import LoadFactors, Severity
from ..monitoring.counters import ADMITTED, STORE_UNAVAILABLE, count_publish_failed, outcome_field
from .bucket import Decision, Outcome
from .leases import Leases, Renewal
from .plan import CallContext, Plan, limit_text, make_plan
from .port import AdmissionStore, AdmitPolicy, AdmitRequest, delay_for
from .settings import AdmissionSettings
from .strategies import Strategy, StrategyKind

__all__ = ["Verdict", "Admission", "SeveritySource", "RateMultiplier", "ConstantSeverity"]

logger = logging.getLogger("celery_resilience.admission")

_CACHE_SIZE = 65536
_ROUTES_PER_CALLER = 256


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


class _Taken(NamedTuple):
    """Where an admission took its token from, to give it back if its publish fails."""

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
    # What the message header says was decided; worked out once (a lease's verdict is reused
    # for every publish it admits, and an enum's ``value`` is a descriptor call).
    label: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.checked:
            label = "unchecked"
        elif self.decision is Decision.THROTTLE and self.strategy is not None:
            label = self.strategy.kind.value
        else:
            label = self.decision.value
        object.__setattr__(self, "label", label)


class _Route(NamedTuple):
    """Everything a caller's decision needs short of the store, for one load situation:
    worked out once, then one lookup per publish."""

    plan: Plan
    bucket_key: str
    shard: int
    from_lease: Verdict  # an admission from the key's lease: the same every time


class _Caller:
    """One caller's context and its routes, one per load situation: what a publish for
    that caller looks up, found with one lookup of what the call named."""

    __slots__ = ("ctx", "routes")

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.routes: dict[tuple[Severity, float, bool], _Route] = {}


def warn_if_evicting(store: object) -> bool:
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


class Admission:
    """Admission decisions for one app; ``stats`` counts what only this process sees."""

    def __init__(
        self,
        settings: AdmissionSettings,
        store: Callable[[], AdmissionStore],
        *,
        retry_interval: float = 2.0,
        severity: SeveritySource | None = None,
        load: RateMultiplier | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.severity: SeveritySource = severity or ConstantSeverity()
        self.load = load
        # The load monitor is the severity source too, by default: one call answers both.
        self._situation: Callable[[str | None, str | None], tuple[Severity, float]] | None = (
            getattr(load, "situation", None) if load is not None and cast(object, severity) is load else None
        )
        self.stats: Counter[str] = Counter()
        self._store = store
        self._retry_interval = retry_interval
        self._monotonic = clock.monotonic
        self._store_down_until = 0.0
        # One warning per outage, however many calls and retries it spans (a failover).
        self._outage_announced = False
        self.leases = Leases(settings.lease_window, clock.monotonic)
        # Counters the store could not take when they arose (admissions it missed, a lease's
        # admissions whose report failed), counted with the first decision it answers again.
        self._unreported: dict[str, float] = {}
        self._unreported_lock = threading.Lock()  # publishing threads add while one reports
        # Derived from immutable settings and cached: the hot path is one lookup of what the
        # call named, then one of the load situation (the criticality follows from the
        # request type). Callers by their resolved context, and by what calls named.
        self._callers: dict[tuple[str | None, str, str], _Caller] = {}
        self._named: dict[tuple[object, ...], _Caller] = {}
        _all_admissions.add(self)
        atexit.register(_flush_at_exit, weakref.ref(self))

    def context(
        self, user_id: object, tier: str | None, request_type: str | None, task_default: str | None
    ) -> CallContext:
        """Resolve the call's context; a wrong tier or request type is the caller's error, raised now."""
        return self._named_caller(user_id, tier, request_type, task_default).ctx

    def admit_call(
        self,
        user_id: object,
        tier: str | None,
        request_type: str | None,
        task_default: str | None,
        *,
        task_name: str,
        queue: str | None = None,
        breaker: str | None = None,
        refusable: bool = True,
    ) -> tuple[CallContext, Verdict]:
        """``context`` and ``decide`` in one: the publish path's single lookup of its caller."""
        # A copy of _named_caller's memo lookup, inline for speed (tests/plugin/test_speed_copies.py).
        try:
            caller = self._named.get((type(user_id), user_id, tier, request_type, task_default))
        except TypeError:  # something unhashable: refused by the resolution, with the reason
            caller = None
        if caller is None:
            caller = self._named_caller(user_id, tier, request_type, task_default)
        return caller.ctx, self._decide(caller, task_name, queue, breaker, refusable)

    def _named_caller(
        self, user_id: object, tier: str | None, request_type: str | None, task_default: str | None
    ) -> _Caller:
        """Callers resolved without the tier resolver are kept by what the call named: a
        publish asks the same question for the same caller again and again (the
        resolver's answer may change)."""
        memo = (type(user_id), user_id, tier, request_type, task_default)
        # admit_call repeats this lookup inline, for speed (tests/plugin/test_speed_copies.py).
        try:
            found = self._named.get(memo)
        except TypeError:  # something unhashable: refused below, with the reason
            found = None
        if found is not None:
            return found
        caller = self._caller(self._resolve(user_id, tier, request_type, task_default))
        if self.settings.tier_resolver is None or tier is not None or user_id is None:
            if len(self._named) >= _CACHE_SIZE:
                self._named.clear()
            self._named[memo] = caller
        return caller

    def _caller(self, ctx: CallContext) -> _Caller:
        """The one entry of a resolved context, whatever the call named: its routes, and the
        policies its leases are kept under, are the same for every call of it."""
        key = (ctx.user_id, ctx.tier, ctx.request_type)
        found = self._callers.get(key)
        if found is None:
            if len(self._callers) >= _CACHE_SIZE:
                self._callers.clear()
                self._named.clear()
            # Threads resolving the same caller at once keep the first entry: one lease per key.
            found = self._callers.setdefault(key, _Caller(ctx))
        return found

    def _resolve(
        self, user_id: object, tier: str | None, request_type: str | None, task_default: str | None
    ) -> CallContext:
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
        ``refusable=False``: the publish must go out (see ``make_plan``)."""
        return self._decide(self._caller(ctx), task_name, queue, breaker, refusable)

    def _decide(
        self, caller: _Caller, task_name: str, queue: str | None, breaker: str | None, refusable: bool
    ) -> Verdict:
        if self._situation is not None:
            severity, multiplier = self._situation(queue, breaker)
        else:
            multiplier = self.load.multiplier(queue, breaker) if self.load is not None else 1.0
            severity = self.severity.severity(queue)
        ctx = caller.ctx
        route = caller.routes.get((severity, multiplier, refusable))
        if route is None:
            route = self._route(caller, severity, multiplier, refusable)
        plan, bucket_key, shard = route.plan, route.bucket_key, route.shard
        policy = plan.policy
        pending = 0
        if policy.lease:
            leased, pending = self.leases.use(bucket_key, policy)
            if leased:
                return route.from_lease
        if self._monotonic() < self._store_down_until:
            return self._store_failed(ctx, task_name, None, policy.tier, pending)
        request = AdmitRequest(bucket_key, shard, policy, policy.lease, pending)
        renewals = self.leases.due() if policy.lease else []
        try:
            outcome = self._admit(request, renewals)
        except StoreUnavailable as error:
            self._store_down_until = self._monotonic() + self._retry_interval
            return self._store_failed(ctx, task_name, error, policy.tier, pending)
        if self._outage_announced:
            self._outage_announced = False
            logger.warning("resilience store answers again; admission checks every call again")
        if self._unreported:
            self._report_unreported()
        if outcome.leased:
            self._report(self.leases.take(bucket_key, shard, policy, outcome.leased))
        return self._verdict(
            outcome, plan, _Taken(bucket_key, shard, policy, False), ctx, task_name, queue, breaker
        )

    def _admit(self, request: AdmitRequest, renewals: list[Renewal]) -> Outcome:
        """The request's outcome; the leases due renewed in the same round trip. Admissions
        made from them that the store could not take are kept for its return."""
        if not renewals:
            return self._store().admit(request)
        try:
            outcomes = self._store().admit_many(
                [
                    request,
                    *(
                        AdmitRequest(r.bucket_key, r.shard, r.policy, r.policy.lease, r.used, renew=True)
                        for r in renewals
                    ),
                ]
            )
        except BaseException as error:  # the store down, or the call cut off (an interrupt)
            self.leases.renewal_failed(renewals)
            if isinstance(error, StoreUnavailable):
                self._keep_unreported(_lease_admissions(renewals))
            raise
        outcome, *renewed_outcomes = outcomes
        if outcome is None:  # a store breaking its contract: as undecided
            self.leases.renewal_failed(renewals)
            self._keep_unreported(_lease_admissions(renewals))
            raise StoreUnavailable("the store left the admission undecided")
        self.leases.renewed(
            renewals, [0 if renewed is None else renewed.leased for renewed in renewed_outcomes]
        )
        lost = [
            renewal for renewal, renewed in zip(renewals, renewed_outcomes, strict=True) if renewed is None
        ]
        if lost:
            self._keep_unreported(_lease_admissions(lost))
        return outcome

    def _verdict(
        self,
        outcome: Outcome,
        plan: Plan,
        taken: _Taken,
        ctx: CallContext,
        task_name: str,
        queue: str | None,
        breaker: str | None,
    ) -> Verdict:
        """The store's answer as what to do with the publish: go, wait for a slot, or refuse."""
        if outcome.decision is not Decision.THROTTLE:
            return Verdict(outcome.decision, remaining=outcome.remaining, taken=taken)
        strategy = plan.strategy
        if not outcome.reserved:
            raise self._refusal(outcome, plan, ctx, task_name, queue, breaker)
        if strategy.kind is StrategyKind.DELAY:
            countdown, expires = delay_for(outcome, strategy.seconds), None
        else:
            countdown, expires = outcome.retry_after, outcome.retry_after + strategy.seconds
        return Verdict(
            Decision.THROTTLE, strategy, countdown, expires, remaining=outcome.remaining, taken=taken
        )

    def _refusal(
        self,
        outcome: Outcome,
        plan: Plan,
        ctx: CallContext,
        task_name: str,
        queue: str | None,
        breaker: str | None,
    ) -> Throttled:
        """The ``Throttled`` a refused caller gets: when to come back, and which limit (as the
        adaptive factors made it, if they shrank it) was exceeded."""
        strategy = plan.strategy
        retry_after = outcome.retry_after
        rejected = not strategy.kind.paces
        if rejected:
            retry_after = max(retry_after, strategy.seconds)
        shrunk = self._shrinking_factors(queue, breaker)
        limit = limit_text(plan.limit, plan.policy, shrunk)
        refusal = Throttled(
            retry_after,
            task_name=task_name,
            user_id=ctx.user_id,
            tier=ctx.tier,
            request_type=ctx.request_type,
            reason=(
                f"{limit} exceeded, policy {strategy}"
                if rejected
                else f"{limit} exceeded beyond the {self.settings.max_throttle_delay:g}s pacing horizon"
            ),
            factors=shrunk,
        )
        refusal.answerable = strategy.kind is StrategyKind.ANSWER or (
            strategy.kind.paces and ctx.criticality in self.settings.answer_beyond_horizon
        )
        return refusal

    def give_back(self, verdict: Verdict) -> None:
        """The publish this verdict admitted failed: return its token (to the lease it came from,
        else to the bucket) or its grace, and count the failure, so that a broken broker does
        not spend the user's allowance."""
        taken = verdict.taken
        if taken is None:
            return
        to_store = not (taken.leased and self.leases.give_back(taken.bucket_key, taken.policy))
        try:
            store = self._store()
            if to_store:
                grace = verdict.decision is Decision.ALLOW_WITH_GRACE
                store.refund(taken.bucket_key, taken.policy.spec, grace)
            count_publish_failed(lambda fields: store.count(fields, taken.shard))
        except StoreUnavailable:
            self.stats[STORE_UNAVAILABLE] += 1
            count_publish_failed(self._keep_unreported)

    def flush_leases(self) -> None:
        """Report admissions made from leases to the metrics and drop every lease."""
        self._report(self.leases.drain())

    def _route(self, caller: _Caller, severity: Severity, multiplier: float, refusable: bool) -> _Route:
        ctx = caller.ctx
        plan = make_plan(self.settings, severity, self.settings.tiers[ctx.tier], ctx, multiplier, refusable)
        bucket_key, shard = self._store().user_bucket(
            ctx.user_id, ctx.tier, ctx.request_type if plan.own_bucket else None
        )
        route = _Route(
            plan,
            bucket_key,
            shard,
            Verdict(Decision.ALLOW, taken=_Taken(bucket_key, shard, plan.policy, True)),
        )
        if len(caller.routes) >= _ROUTES_PER_CALLER:  # situations come and go: keep the recent
            caller.routes.clear()
        # Threads working out the same route at once keep the first: its policy keys the lease.
        return caller.routes.setdefault((severity, multiplier, refusable), route)

    def _shrinking_factors(self, queue: str | None, breaker: str | None) -> dict[str, float]:
        """The adaptive factors below 1 that apply to this publish (asked only on a refusal)."""
        if self.load is None:
            return {}
        factors = dataclasses.asdict(self.load.factors(queue, breaker))
        return {name: round(value, 4) for name, value in factors.items() if value < 1.0}

    def _report(self, spent: dict[tuple[int, str], int]) -> None:
        """Count admissions made from leases, per shard; kept for later if the store is down."""
        per_shard: dict[int, dict[str, float]] = {}
        for (shard, tier), used in spent.items():
            fields = per_shard.setdefault(shard, {})
            fields[outcome_field(ADMITTED, tier)] = fields.get(outcome_field(ADMITTED, tier), 0) + used
        for shard, fields in per_shard.items():
            try:
                self._store().count(fields, shard)
            except StoreUnavailable:
                self.stats[STORE_UNAVAILABLE] += 1
                self._keep_unreported(fields)

    def _keep_unreported(self, fields: Mapping[str, float]) -> None:
        with self._unreported_lock:
            for name, amount in fields.items():
                self._unreported[name] = self._unreported.get(name, 0.0) + amount

    def _report_unreported(self) -> None:
        """The store is back: count what it missed (its outage, leases' admissions) in the metrics."""
        with self._unreported_lock:
            fields = dict(self._unreported)
            self._unreported.clear()
        if not fields:
            return  # another thread reported them
        try:
            self._store().count(fields)
        except StoreUnavailable:
            self._keep_unreported(fields)

    def _store_failed(
        self, ctx: CallContext, task_name: str, error: StoreUnavailable | None, tier: str, pending: int
    ) -> Verdict:
        self.stats[STORE_UNAVAILABLE] += 1
        missed: dict[str, float] = {STORE_UNAVAILABLE: 1}
        if pending:
            # Admissions made from the lease just given up: their report rode on this call.
            missed[outcome_field(ADMITTED, tier)] = pending
        self._keep_unreported(missed)
        if error is not None and not self._outage_announced:
            self._outage_announced = True
            logger.warning(
                "resilience store unreachable (%s); admission fails %s, asking it again every %.3gs",
                error,
                "open" if self.settings.fail_open else "closed",
                self._retry_interval,
            )
        if self.settings.fail_open:
            return Verdict(Decision.ALLOW, checked=False)
        raise AdmissionUnavailable(
            self._retry_interval,
            task_name=task_name,
            user_id=ctx.user_id,
            tier=ctx.tier,
            request_type=ctx.request_type,
            reason="the resilience store is unreachable and admission fails closed",
        )


def _lease_admissions(renewals: list[Renewal]) -> dict[str, float]:
    """Admissions made from leases, as metric fields to count when the store is back."""
    fields: dict[str, float] = {}
    for renewal in renewals:
        if renewal.used:
            name = outcome_field(ADMITTED, renewal.policy.tier)
            fields[name] = fields.get(name, 0) + renewal.used
    return fields


# What this process had not reported must not be reported twice by a forked child.
_all_admissions: weakref.WeakSet[Admission] = weakref.WeakSet()


def _forget_unreported_in_child() -> None:
    for admission in list(_all_admissions):
        admission._unreported.clear()
        admission._unreported_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_unreported_in_child)


def _flush_at_exit(ref: weakref.ref[Admission]) -> None:
    admission = ref()
    if admission is not None:
        try:
            admission.flush_leases()
        except Exception as error:  # at exit, a store that cannot be opened any more
            logger.debug("leases not reported at exit: %s", error)
