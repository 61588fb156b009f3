"""Admission at enqueue time: who is calling, what limit applies, and what to do when over it.

Celery-free: the task layer turns a ``Verdict`` into publish options. One store round
trip per admission; when the store cannot be reached the caller keeps working (fail
open, the default) or gets an ``AdmissionUnavailable`` at once (fail closed), and the
store is left alone for ``store_retry_interval`` so that no publish waits on a dead
store twice in a row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .bucket import BucketSpec, Decision
from .errors import AdmissionUnavailable, StoreUnavailable, Throttled
from .keys import ANONYMOUS, escape_part
from .policy import Criticality, Severity, Strategy, StrategyKind
from .settings import Limit, ResilienceSettings, TierPolicy
from .store.base import AdmitPolicy, AdmitRequest, Store, delay_for

__all__ = ["CallContext", "Verdict", "Admission", "SeveritySource", "ConstantSeverity"]

logger = logging.getLogger("celery_resilience.admission")

_KEY_CACHE_SIZE = 65536


class SeveritySource(Protocol):
    """Tells how loaded the system is; backpressure and worker health plug in here."""

    def severity(self, queue: str | None) -> Severity: ...


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


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one publish. ``countdown``/``expires`` are seconds from now."""

    decision: Decision
    strategy: Strategy | None = None
    countdown: float = 0.0
    expires: float | None = None
    remaining: float = 0.0
    checked: bool = True

    @property
    def label(self) -> str:
        if not self.checked:
            return "unchecked"
        if self.decision is Decision.THROTTLE and self.strategy is not None:
            return self.strategy.kind.value
        return self.decision.value


class Admission:
    def __init__(
        self,
        settings: ResilienceSettings,
        store_factory: Callable[[], Store],
        severity: SeveritySource | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.severity: SeveritySource = severity or ConstantSeverity()
        self.stats: Counter[str] = Counter()
        self._store_factory = store_factory
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._monotonic = monotonic
        self._store_down_until = 0.0
        # Everything below is derived from immutable settings; caching it keeps the hot
        # path to one dictionary lookup per part instead of rebuilding it per publish.
        self._strategies: dict[tuple[Severity, str, str], Strategy] = {}
        self._policies: dict[tuple[str, str, Strategy, float], AdmitPolicy] = {}
        self._bucket_keys: dict[tuple[str | None, str, str | None], tuple[str, int]] = {}

    @property
    def store(self) -> Store:
        """The store, opened on first use so that forked workers never share a connection."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = self._store_factory()
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

    def decide(self, ctx: CallContext, *, task_name: str, queue: str | None = None) -> Verdict:
        """One admission decision; raises ``Throttled`` when the policy says reject."""
        settings = self.settings
        tier = settings.tiers[ctx.tier]
        severity = self.severity.severity(queue)
        strategy = self._strategies.get((severity, ctx.tier, ctx.request_type))
        if strategy is None:
            strategy = settings.strategies.choose(severity, ctx.tier, ctx.request_type, ctx.criticality)
            self._strategies[(severity, ctx.tier, ctx.request_type)] = strategy
        limit, own_bucket = tier.limit_for(ctx.request_type)
        multiplier = self.multiplier(tier)
        policy = self._policies.get((ctx.tier, ctx.request_type, strategy, multiplier))
        if policy is None:
            policy = self._policy(tier, limit, ctx, strategy, multiplier)
        bucket_key, shard = self._bucket_key(ctx, own_bucket)
        request = AdmitRequest(bucket_key, shard, policy)
        if self._monotonic() < self._store_down_until:
            return self._store_failed(ctx, task_name, None)
        try:
            outcome = self.store.admit(request)
        except StoreUnavailable as error:
            self._store_down_until = self._monotonic() + settings.store_retry_interval
            return self._store_failed(ctx, task_name, error)

        if outcome.decision is not Decision.THROTTLE:
            return Verdict(outcome.decision, remaining=outcome.remaining)
        if not outcome.reserved:
            retry_after = outcome.retry_after
            if strategy.kind is StrategyKind.REJECT_WITH_BACKOFF:
                retry_after = max(retry_after, strategy.seconds)
            raise Throttled(
                retry_after,
                task_name=task_name,
                user_id=ctx.user_id,
                tier=ctx.tier,
                request_type=ctx.request_type,
                reason=(
                    f"rate limit {limit.rate} exceeded, policy {strategy}"
                    if strategy.kind is StrategyKind.REJECT_WITH_BACKOFF
                    else f"rate limit {limit.rate} exceeded beyond the "
                    f"{settings.max_throttle_delay:g}s pacing horizon"
                ),
            )
        if strategy.kind is StrategyKind.DELAY:
            return Verdict(
                Decision.THROTTLE,
                strategy,
                countdown=delay_for(outcome, strategy.seconds),
                remaining=outcome.remaining,
            )
        return Verdict(
            Decision.THROTTLE,
            strategy,
            countdown=outcome.retry_after,
            expires=outcome.retry_after + strategy.seconds,
            remaining=outcome.remaining,
        )

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

    def _policy(
        self, tier: TierPolicy, limit: Limit, ctx: CallContext, strategy: Strategy, multiplier: float
    ) -> AdmitPolicy:
        """Build (once per tier, request type, strategy and multiplier) what the store needs."""
        refill = limit.rate.per_second * multiplier
        if tier.minimum_guaranteed is not None:
            refill = max(refill, tier.minimum_guaranteed.per_second)
        if tier.maximum_burst is not None:
            refill = min(refill, tier.maximum_burst.per_second)
        spec = BucketSpec(
            capacity=float(limit.burst),
            refill=refill,
            grace_limit=limit.grace,
            grace_period=limit.grace_period,
            # Never more than a full bucket can spare: a full bucket admits every class.
            reserve=min(self.settings.criticality_reserve[ctx.criticality] * limit.burst, limit.burst - 1.0),
            grace_allowed=not ctx.criticality.sheddable,
            horizon=self.settings.max_throttle_delay if strategy.kind.paces else 0.0,
        )
        policy = AdmitPolicy(
            spec,
            tier=ctx.tier,
            strategy=strategy.kind.value,
            min_delay=strategy.seconds if strategy.kind is StrategyKind.DELAY else 0.0,
        )
        if len(self._policies) >= _KEY_CACHE_SIZE:
            self._policies.clear()
        self._policies[(ctx.tier, ctx.request_type, strategy, multiplier)] = policy
        return policy

    def multiplier(self, policy: TierPolicy) -> float:
        """Adaptive factor applied to the baseline rate (1.0 until adaptive limits plug in)."""
        return 1.0

    def _store_failed(self, ctx: CallContext, task_name: str, error: StoreUnavailable | None) -> Verdict:
        self.stats["store_unavailable"] += 1
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
