"""Breakers as one process sees them: shared through the store, cached, with a local fallback.

Round trips are what make a breaker expensive, so a process keeps what it learns:
- a breaker it knows to be OPEN refuses calls locally until its deadline, with no
  round trip (the store's answers and the pub/sub feed of transitions tell it);
- a breaker it knows to be CLOSED grants calls locally (stamped with the known
  generation) for ``closed_cache_seconds``. A failure is recorded in one round trip
  after the call; successes only feed the ``minimum_calls`` count, so they are counted
  locally and reported together at most every ``success_flush_seconds`` (or with the
  next failure). Had the breaker moved on meanwhile, the stale generation makes the
  store ignore those outcomes, which is exactly the semantics wanted;
- HALF_OPEN always asks the store: probe permits are leases for the whole cluster.

When the store cannot be reached, the process falls back to a breaker of its own with
the same policy (``LocalBreakers``), logs it, counts it, and rejoins the shared state
once the store answers again.

``stats`` counts what only this process sees (calls refused from its cache, transitions
heard on the feed, slow calls, store outages), for inspection and tests; what the
cluster should see goes to the metrics.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import CircuitOpen, StoreUnavailable
from ..monitoring.counters import BREAKER_CLOSE, BREAKER_FORCED, BREAKER_TRIP, Count, count_breaker
from .classification import Category, Classification, Classifier
from .local import LocalBreakers
from .machine import BreakerPolicy, BreakerState, BreakerView, Denied, Permit, Recorded, effective_state
from .port import BreakerOutcome, BreakerStore

__all__ = ["Breakers", "Call"]

logger = logging.getLogger("celery_resilience.breakers")


def _flush_at_exit(ref: weakref.ref[Breakers]) -> None:
    breakers = ref()
    if breakers is not None:
        breakers.flush()


# A forked child has no pub/sub thread and must not trust its parent's cache.
_all_breakers: weakref.WeakSet[Breakers] = weakref.WeakSet()


def _reset_in_child() -> None:
    for breakers in list(_all_breakers):
        breakers._cache.clear()
        breakers._pending.clear()
        breakers._subscribed_store = None
        breakers._lock = threading.Lock()
        breakers._pending_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


@dataclass(slots=True)
class Call:
    """One guarded call: the permit it runs under and where to report its outcome."""

    name: str
    permit: Permit
    store: BreakerStore
    started: float
    slow: bool = False


@dataclass(slots=True)
class _Pending:
    """Successes counted locally under one generation, not yet reported."""

    generation: int
    count: int
    since: float


@dataclass(slots=True)
class _Cached:
    view: BreakerView
    until: float  # monotonic time until which the cached view may be trusted


class Breakers:
    def __init__(
        self,
        policies: Mapping[str, BreakerPolicy],
        store: Callable[[], BreakerStore],
        classifier: Classifier,
        *,
        count: Count | None = None,
        on_trip: Callable[[str, Recorded], None] | None = None,
        closed_cache_seconds: float = 2.0,
        success_flush_seconds: float = 0.25,
        retry_interval: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.policies = dict(policies)
        self.classifier = classifier
        self.stats: Counter[str] = Counter()
        self._store = store
        self._count = count or (lambda fields: None)
        self._on_trip = on_trip
        self._closed_cache_seconds = closed_cache_seconds
        self._success_flush_seconds = success_flush_seconds
        self._pending: dict[str, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._retry_interval = retry_interval
        self._clock = clock
        self._monotonic = clock.monotonic
        self._jitter = jitter
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._subscribed_store: BreakerStore | None = None
        self._local = LocalBreakers(clock.now)
        self._store_down_until = 0.0
        _all_breakers.add(self)
        atexit.register(_flush_at_exit, weakref.ref(self))

    def policy(self, name: str) -> BreakerPolicy:
        try:
            return self.policies[name]
        except KeyError:
            raise KeyError(
                f"no breaker named {name!r}; configured in resilience_breakers: {sorted(self.policies)}"
            ) from None

    # -- the call path -------------------------------------------------------------------

    def acquire(self, name: str) -> Call:
        """A permit to call ``name``, or ``CircuitOpen`` when the breaker refuses."""
        policy = self.policy(name)
        now = self._monotonic()
        cached = self._cache.get(name)
        if cached is not None and now < cached.until:
            view = cached.view
            if view.state is BreakerState.OPEN or view.state is BreakerState.FORCED_OPEN:
                self.stats["refused_locally"] += 1
                retry = None if view.state is BreakerState.FORCED_OPEN else cached.until - now
                raise CircuitOpen(name, view.state.value, retry)
            if view.state is BreakerState.CLOSED:
                return Call(name, Permit(view.generation), self._shared(), now)
        store = self._current_store()
        lease = uuid.uuid4().hex
        try:
            result, view = store.breaker_acquire(name, policy, lease)
        except StoreUnavailable as error:
            self._store_failed(error)
            store = self._local
            result, view = store.breaker_acquire(name, policy, lease)
        if store is not self._local:
            self._remember(name, view, result)
        if isinstance(result, Denied):
            raise CircuitOpen(name, result.state.value, result.retry_after)
        return Call(name, result, store, now)

    def record(self, call: Call, error: BaseException | None) -> Classification | None:
        """Report the call's outcome; a call that overran ``call_timeout`` counts as a timeout.
        Returns the error's classification, on which callers decide retries and fallbacks
        (a disabled breaker records nothing, and still classifies)."""
        classification = self.classifier(error) if error is not None else None
        if call.permit.recording:
            self._record(call, classification)
        return classification

    def _record(self, call: Call, classification: Classification | None) -> None:
        policy = self.policy(call.name)
        if classification is not None and classification.category is Category.IGNORED:
            # Celery control flow says nothing about the dependency; a probe gives its
            # half-open slot back so that the next call can probe at once.
            if call.permit.probe:
                self._release(call, policy)
            return
        weight = classification.weight if classification is not None else 0.0
        now = self._monotonic()
        if policy.call_timeout is not None and now - call.started > policy.call_timeout:
            call.slow = True
            self.stats["slow_calls"] += 1
            weight = max(weight, self.classifier.weights[Category.TIMEOUT])
        shared = call.store is not self._local
        if weight == 0 and not call.permit.probe and shared:
            due = self._take_pending(call.name, call.permit.generation, add=1, now=now)
            if due:
                self._send(call, policy, BreakerOutcome(call.permit.generation, "", 0.0, calls=due))
            return
        batched = (
            self._take_pending(call.name, call.permit.generation, add=0, now=now, force=True) if shared else 0
        )
        outcome = BreakerOutcome(
            call.permit.generation,
            call.permit.lease,
            weight,
            classification.retry_after if classification is not None else None,
            classification is not None and classification.category is Category.QUOTA_EXHAUSTED,
            self._jitter(),
            calls=1 + batched,
        )
        self._send(call, policy, outcome)

    def _take_pending(self, name: str, generation: int, add: int, now: float, force: bool = False) -> int:
        """Add ``add`` successes to the local count; return the count now due for reporting
        (everything when ``force``d by a failure, else once the flush interval has passed)."""
        with self._pending_lock:
            pending = self._pending.get(name)
            if pending is None or pending.generation != generation:
                pending = self._pending[name] = _Pending(generation, 0, now)
            pending.count += add
            if not force and now - pending.since < self._success_flush_seconds:
                return 0
            del self._pending[name]
            return pending.count

    def flush(self) -> None:
        """Report every success counted locally (at exit, and for tests and operators)."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for name, batch in pending.items():
            if batch.count and name in self.policies:
                try:
                    self._shared().breaker_record(
                        name,
                        self.policies[name],
                        BreakerOutcome(batch.generation, "", 0.0, calls=batch.count),
                    )
                except StoreUnavailable:
                    self.stats["store_unavailable"] += 1

    def _release(self, call: Call, policy: BreakerPolicy) -> None:
        try:
            call.store.breaker_release(call.name, policy, call.permit.generation, call.permit.lease)
        except StoreUnavailable as unavailable:
            self._store_failed(unavailable)  # the lease expires on its own

    def _send(self, call: Call, policy: BreakerPolicy, outcome: BreakerOutcome) -> None:
        try:
            recorded = call.store.breaker_record(call.name, policy, outcome)
        except StoreUnavailable as unavailable:
            self._store_failed(unavailable)
            self._local.breaker_record(call.name, policy, outcome)
            return
        if recorded.changed and call.store is not self._local:
            self._remember(
                call.name, BreakerView(recorded.state, recorded.generation, recorded.open_until), None
            )
            self._transitioned(call.name, recorded)

    def _transitioned(self, name: str, recorded: Recorded) -> None:
        """This process's outcome moved the shared breaker: count it where it happened, and
        report a trip at once (the store made exactly one process see this transition)."""
        if recorded.state is BreakerState.OPEN:
            count_breaker(self._count, BREAKER_TRIP, name)
            if self._on_trip is not None:
                self._on_trip(name, recorded)
        elif recorded.state is BreakerState.CLOSED:
            count_breaker(self._count, BREAKER_CLOSE, name)

    @contextmanager
    def guard(self, name: str) -> Iterator[Call]:
        """``with breakers.guard("openai"): ...``, or ``@breakers.guard("openai")`` on a function
        (each call is guarded on its own)."""
        call = self.acquire(name)
        try:
            yield call
        except BaseException as error:
            self.record(call, error)
            raise
        self.record(call, None)

    def state(self, name: str) -> BreakerState:
        """The breaker's state as this process knows it, asking the store when it knows nothing
        (at most once per cache period: an open breaker is then known until its deadline).
        An open breaker past its deadline is reported ``half_open``: what the next call finds."""
        now = self._monotonic()
        cached = self._cache.get(name)
        if cached is not None and now < cached.until:
            return cached.view.state
        store = self._shared()
        try:
            view = store.breaker_read(name, self.policy(name))
            state = effective_state(view.state, view.open_until, store.now())
            if state is not view.state:
                # Its time is up: the next call is a probe. Reporting it open would send
                # every publish to the fallbacks and no call would ever probe the breaker.
                return state
        except StoreUnavailable as error:
            self._store_failed(error)
            return self._local.breaker_read(name, self.policy(name)).state
        self._remember(name, view, None)
        return view.state

    def cached_state(self, name: str) -> BreakerState | None:
        """What this process knows of a breaker without asking the store (None: nothing)."""
        cached = self._cache.get(name)
        return cached.view.state if cached is not None else None

    # -- operators -----------------------------------------------------------------------

    def force(self, name: str, state: BreakerState) -> BreakerView:
        view = self._shared().breaker_force(name, self.policy(name), state)
        self._remember(name, view, None)
        count_breaker(self._count, BREAKER_FORCED, name)
        return view

    def read(self, name: str) -> BreakerView:
        return self._shared().breaker_read(name, self.policy(name))

    # -- caching and the store -------------------------------------------------------------

    def _shared(self) -> BreakerStore:
        store = self._store()
        if self._subscribed_store is not store:
            with self._lock:
                if self._subscribed_store is not store:
                    store.subscribe(self._on_transition, self.policies)
                    self._subscribed_store = store
        return store

    def _current_store(self) -> BreakerStore:
        if self._monotonic() < self._store_down_until:
            return self._local
        return self._shared()

    def _remember(self, name: str, view: BreakerView, result: Permit | Denied | None) -> None:
        now = self._monotonic()
        if view.state is BreakerState.OPEN:
            left = (
                result.retry_after if isinstance(result, Denied) and result.retry_after is not None else None
            )
            if left is None:
                left = max(0.0, view.open_until - self._clock.now())
            self._cache[name] = _Cached(view, now + left)
        elif view.state is BreakerState.FORCED_OPEN or view.state is BreakerState.CLOSED:
            self._cache[name] = _Cached(view, now + self._closed_cache_seconds)
        else:
            self._cache.pop(name, None)

    def _on_transition(self, name: str | None, view: BreakerView | None) -> None:
        if name is None or view is None:
            self._cache.clear()  # the feed was interrupted: nothing cached can be trusted
            return
        if name in self.policies:
            self.stats["transitions_heard"] += 1
            self._remember(name, view, None)

    def _store_failed(self, error: StoreUnavailable) -> None:
        self.stats["store_unavailable"] += 1
        if self._monotonic() >= self._store_down_until:
            logger.warning(
                "resilience store unreachable (%s); breakers run on this process's own state for %.3gs",
                error,
                self._retry_interval,
            )
        self._store_down_until = self._monotonic() + self._retry_interval
        self._cache.clear()
