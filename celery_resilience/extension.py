"""``Resilience(app)``: the one composition root.

It validates the settings once, owns the store (opened on first use, so that forked
workers never share a connection) and the clock, builds each capability with the
collaborators it needs, and connects the plugin to Celery: the worker's bootsteps, the
fallback runner task, the counting of publishes that skip the gate and of expired tasks.

One extension object per app, kept in a weak registry rather than on the app, so two
apps in one process (tests, multi-tenant workers) never see each other's state.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from celery import Celery, Task, signals

from .admission.gate import Admission, SeveritySource, warn_if_evicting
from .breakers.client import Breakers, Call
from .breakers.machine import Recorded
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigurationError, FallbackExhausted, StoreUnavailable
from .fallbacks.cache import SemanticCache
from .fallbacks.chain import FallbackRunner
from .fallbacks.settings import BUILT_IN_STEPS
from .load.fair_queue import FairQueues
from .load.monitor import LoadMonitor
from .load.queue_depth import QueueDepths
from .load.sojourn import SojournWatch
from .monitoring.alerting import AlertMonitor, AlertSender
from .monitoring.counters import count_expired, count_ungated
from .monitoring.rules import breaker_trip_alert
from .monitoring.sentry import SentrySink, handled_errors, report_exhausted
from .providers.fair_share import FairShares
from .providers.hooks import async_response_hook, response_hook
from .providers.quota import ProviderQuota
from .providers.retry_budget import RetryBudgets
from .publishing import (
    HEADER,
    PublishGate,
    apply_verdict,
    queue_name,
)
from .settings import ResilienceSettings
from .store import KeySpace, Store, masked_url, open_store, store_problem
from .validation import did_you_mean

__all__ = ["Resilience", "FALLBACK_TASK"]

logger = logging.getLogger("celery_resilience")

# The built-in task that runs a fallback chain under the caller's task id.
FALLBACK_TASK = "celery_resilience.fallback"
# The worker's bootsteps, by name (Celery resolves them when the worker starts).
_BOOTSTEPS = (
    "celery_resilience.bootsteps:HealthHeartbeat",
    "celery_resilience.bootsteps:AlertMonitorStep",
    "celery_resilience.bootsteps:ConfigurationCheck",
    "celery_resilience.bootsteps:FairRelease",
)

_registry: weakref.WeakKeyDictionary[Celery, Resilience] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()
# The app's extension is also kept on the app: every publish looks it up, and an attribute
# is read in a fraction of the time a weak dictionary takes (it makes a reference per call).
_ON_THE_APP = "_celery_resilience"


def _registered(app: Celery) -> Resilience | None:
    # Repeated inline in Resilience.of, for speed; tests/plugin/test_speed_copies.py holds the two together.
    found: Resilience | None = getattr(app, _ON_THE_APP, None)
    return found


class Resilience:
    """The plugin, bound to one Celery app.

    ``store`` replaces the configured store (tests, demos); ``clock`` is the one clock every
    part reads (``testing.FakeClock`` moves all of them); ``severity`` plugs in a
    load-severity source instead of the load monitor.
    """

    def __init__(
        self,
        app: Celery,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        severity: SeveritySource | None = None,
    ) -> None:
        self.app = app
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.settings = ResilienceSettings.from_conf(
            app.conf,
            broker_url=app.conf.broker_url,
            namespace=getattr(app, "namespace", None),
            clock=self.clock,
            broker_options=app.conf.broker_transport_options,
        )
        self._given_store = store
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._routing: tuple[bool, str] | None = None
        # Names of registered tasks that are neither gated nor resilient, as ``send_task`` found
        # them: their publishes need no look at the registry again (Celery keeps a name's
        # task once registered; a new ``Resilience(app)`` starts with none).
        self._plain_names: set[str] = set()
        # Only an injected clock reaches the store: a Redis store otherwise keeps the server's.
        self._store_clock = clock
        self._build(severity)
        if store is None:
            self._check_store()
        with _registry_lock:
            previous = _registry.get(app)
            _registry[app] = self
            setattr(app, _ON_THE_APP, self)
        self._check_bound_tasks()
        if previous is None:
            self._connect()

    def _build(self, severity: SeveritySource | None) -> None:
        """Each capability, with the collaborators it needs and nothing else."""
        settings, clock = self.settings, self.clock
        self.sentry = SentrySink(settings.monitoring.sentry_dsn)
        self.alerts = AlertSender(settings.monitoring.alerts, lambda: self.store, self.sentry)
        self.breakers = Breakers(
            settings.breakers.policies,
            lambda: self.store,
            settings.breakers.classifier,
            retry_interval=settings.store_retry_interval,
            count=self.record,
            on_trip=self._breaker_tripped,
            clock=clock,
        )
        self.quota = ProviderQuota(settings.providers, lambda: self.store, clock)
        self.fair_shares = FairShares(settings.providers.fair, lambda: self.store, self.quota, clock)
        self.retries = RetryBudgets(settings.providers.retry_budget, lambda: self.store, clock)
        load = settings.load
        self.depths = (
            QueueDepths(self.app, load.depth_interval, clock=clock)
            if load.queue_thresholds or load.fair_queues
            else None
        )
        self.fairness = FairQueues(
            load.fair_queues,
            lambda: self.store,
            self.depths.depth if self.depths is not None else None,
            clock=clock,
        )
        self.load = LoadMonitor(
            load, lambda: self.store, self.depths, self.breakers.cached_state, clock=clock
        )
        # How long this process's dequeued tasks waited, per queue and request type.
        self.sojourn = SojournWatch(load.shedding)
        self.admission = Admission(
            settings.admission,
            lambda: self.store,
            retry_interval=settings.store_retry_interval,
            severity=severity if severity is not None else self.load,
            load=self.load,
            clock=clock,
        )
        self.gate = PublishGate(
            self.admission,
            clock,
            settings.admission.anonymous_calls,
            self.record,
            self.fairness if load.fair_queues else None,
        )
        fallbacks = settings.fallbacks
        self.cache = SemanticCache(
            lambda: self.store,
            fallbacks.embedder,
            similarity=fallbacks.cache_similarity,
            min_quality=fallbacks.cache_quality,
            ttl=fallbacks.cache_ttl,
            max_age=fallbacks.cache_max_age,
            max_entries=fallbacks.cache_max_entries,
            max_error=fallbacks.cache_max_error,
            judge=fallbacks.judge,
        )
        # Tasks are looked up when a chain runs: reading ``app.tasks`` now would finalize the app.
        self.fallbacks = FallbackRunner(
            fallbacks, self._task, self.cache, self.record, step_scope=self._step, category=self._category
        )

    def _task(self, name: str) -> Any:
        return self.app.tasks.get(name)

    def _step(self, name: str) -> AbstractContextManager[None]:
        """Around a fallback step run inline: whatever it raises, the chain records and
        moves past, so error reporting sees it handled (one issue per step and category)."""
        return handled_errors(name, self._category, self.settings.monitoring.sentry_handled)

    def _category(self, error: BaseException) -> str:
        outcome = self.breakers.classifier(error)
        return outcome.category.value if outcome is not None else "other"

    @classmethod
    def registered(cls, app: Celery) -> Resilience | None:
        """The app's extension if ``Resilience(app)`` was called, else None."""
        return _registered(app)

    @classmethod
    def all_registered(cls) -> list[Resilience]:
        """Every app's extension in this process."""
        return list(_registry.values())

    @classmethod
    def of(cls, app: Celery) -> Resilience:
        """The app's extension, created with the app's settings on first use."""
        # Every publish asks: a copy of _registered, inline for speed (tests/plugin/test_speed_copies.py).
        found: Resilience | None = getattr(app, _ON_THE_APP, None)
        return found if found is not None else cls(app)

    @property
    def store(self) -> Store:
        """The store, opened on first use so that forked workers never share a connection."""
        store = self._store
        if store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = self._given_store or open_store(
                        self.settings.store_url,
                        KeySpace(self.settings.key_prefix, self.settings.key_shards),
                        timeout=self.settings.store_timeout,
                        clock=self._store_clock,
                        metrics_ttl=self.settings.monitoring.metrics_ttl,
                        options=self.settings.store_options,
                    )
                    warn_if_evicting(self._store)
                store = self._store
        return store

    def routing(self) -> tuple[bool, str]:
        """Whether the app routes tasks, and its default queue: read once, on the first publish
        (Celery's settings are slow to read, and final by the time anything is published)."""
        # route() reads self._routing inline before calling this, for speed
        # (tests/plugin/test_speed_copies.py).
        if self._routing is None:
            self._routing = (bool(self.app.conf.task_routes), str(self.app.conf.task_default_queue))
        return self._routing

    def route(
        self, name: str, args: Any, kwargs: Any, options: dict[str, Any], task_queue: Any = None
    ) -> str | None:
        """The queue a publish of ``name`` lands in: the call's, the task's own (``task_queue``),
        the router's, the default."""
        explicit = options.get("queue")
        if explicit is not None and not isinstance(explicit, str):
            explicit = queue_name(explicit)
        if explicit is None and task_queue is not None:
            explicit = queue_name(task_queue)
        if explicit is not None:
            return explicit
        # A copy of routing()'s memo check, inline for speed (tests/plugin/test_speed_copies.py).
        routes, default_queue = self._routing or self.routing()
        if routes:
            return queue_name(self.app.amqp.router.route(dict(options), name, args, kwargs).get("queue"))
        return default_queue

    def guard(self, breaker: str) -> AbstractContextManager[Call]:
        """Guard one call inside any task: ``with Resilience.of(app).guard("openai"): ...``.
        Raises ``CircuitOpen`` when the breaker refuses; records the outcome either way."""
        return self.breakers.guard(breaker)

    def provider_hooks(self, provider: str, *, asynchronous: bool = False) -> dict[str, list[Any]]:
        """``event_hooks`` for the HTTP client a provider's SDK sends through (``httpx2`` or
        ``httpx``), so that every response steers ``provider``'s budget (its headers) and
        settles the guarded call's reservation (its ``usage``, streamed or not)::

            client = OpenAI(http_client=httpx2.Client(event_hooks=resilience.provider_hooks("openai")))

        ``asynchronous=True`` for an async client. A provider without a budget in
        ``resilience_providers`` gets hooks all the same, which count its 429s: removing a
        budget from the settings must not break the code that builds the client."""
        if not isinstance(provider, str) or not provider:
            raise ValueError(f"provider_hooks needs a provider's name, not {provider!r}")
        make = async_response_hook if asynchronous else response_hook
        return {"response": [make(self.quota, provider, self.clock)]}

    def answer_from_chain(
        self,
        task_name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        reason: str,
        category: str,
        failed_breaker: str | None,
    ) -> Any:
        """``task_name``'s chain answers; an exhausted chain is reported with every attempt
        as context, then raised (the task's failure)."""
        try:
            return self.fallbacks.run(task_name, args, kwargs, reason, category, failed_breaker)
        except FallbackExhausted as exhausted:
            report_exhausted(exhausted.task, exhausted.reason, exhausted.attempts)
            raise

    def record(self, fields: Mapping[str, float]) -> None:
        """Count into the store's metrics; a store outage is logged, never raised."""
        try:
            self.store.count(fields)
        except StoreUnavailable as error:
            logger.debug("could not record %s: %s", dict(fields), error)

    def alert_monitor(self, owner: str) -> AlertMonitor:
        """The cluster's alert monitor as run by one worker (``owner``)."""
        breakers = self.breakers

        def open_breakers() -> list[str]:
            return [
                name
                for name in breakers.policies
                if breakers.read(name).state.value in ("open", "forced_open")
            ]

        return AlertMonitor(
            self.settings.monitoring,
            self.alerts,
            lambda: self.store,
            owner,
            open_breakers=open_breakers,
            upcoming=lambda: self.load.upcoming,
        )

    def check_chains(self) -> None:
        """In a worker, where every task module is imported: each fallback step names a
        registered task or a built-in step (a producer may not import the fallback tasks)."""
        registered = set(self.app.tasks)
        chains: list[tuple[str, Any]] = [
            (f"resilience_fallbacks[{owner!r}]", steps)
            for owner, steps in self.settings.fallbacks.chains.items()
        ]
        chains += [
            (f"{name}.fallbacks", getattr(task, "fallbacks", ())) for name, task in self.app.tasks.items()
        ]
        for where, steps in chains:
            for step in steps:
                name = step if isinstance(step, str) else step.get("task")
                if name not in registered and name not in BUILT_IN_STEPS:
                    raise ConfigurationError(
                        where,
                        "registered task names or the built-in steps "
                        f"{list(BUILT_IN_STEPS)}{did_you_mean(name, registered | set(BUILT_IN_STEPS))}",
                        name,
                    )

    def _check_store(self) -> None:
        """At start-up, say once and clearly that the store does not answer, and what happens
        meanwhile; the application starts all the same (the store may come up later)."""
        url = self.settings.store_url
        problem = store_problem(url, self.settings.store_timeout, self.settings.store_options)
        if problem is None:
            return
        policy = (
            "open: calls are published unchecked"
            if self.settings.admission.fail_open
            else "closed: calls are refused with AdmissionUnavailable"
        )
        logger.error(
            "the resilience store at %s is unreachable (%s). Until it answers, admission fails %s "
            "(resilience_admission_on_store_failure) and breakers run on each process's own state; "
            "what was counted meanwhile reaches the metrics once it answers.",
            masked_url(url),
            problem,
            policy,
        )

    def _check_bound_tasks(self) -> None:
        """Tasks bound before the plugin was (the app was finalized first): check them now."""
        if not getattr(self.app, "finalized", False):
            return
        for task in list(self.app.tasks.values()):
            check = getattr(type(task), "check_configuration", None)
            if check is None:
                continue
            try:
                check(self.settings)
            except ConfigurationError:
                # As at bind: a shared task declared for another app, whose settings it
                # fits, is not this app's mistake.
                if not any(
                    _fits(check, other.settings) for other in Resilience.all_registered() if other is not self
                ):
                    raise

    def _breaker_tripped(self, name: str, recorded: Recorded) -> None:
        """A trip is urgent: the process whose outcome caused it alerts at once, not a monitor
        tick later (the monitor's claim on the same cool-down stops a second alert)."""
        rule = self.settings.monitoring.alerts["breaker_tripped"]
        try:
            open_for = max(0.0, recorded.open_until - self.store.now())
            alert = breaker_trip_alert(
                rule,
                name,
                f"calls refused for {open_for:.0f}s",
                {"open_for": round(open_for, 3), "generation": recorded.generation},
            )
            self.alerts.deliver(alert)
        except Exception as error:  # the call that tripped the breaker must not fail for its alert
            logger.warning("could not alert that breaker %r tripped: %s", name, error)

    def _send_gated(self, send_task: Any, name: str, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
        """``send_task`` for a task name configured as gated: the producer may not have the
        task's class, so the gate runs here, with the same strategies as ``apply_async``."""
        admitted = self.gate.enter(
            self.app, name, args, kwargs, options, self.settings.admission.gated_tasks[name], None, self.route
        )
        if admitted is not None:
            apply_verdict(options, admitted, self.clock.now)
        try:
            return send_task(name, args, kwargs, **options)
        except Exception:
            if admitted is not None:  # nothing was published: the caller keeps their allowance
                self.admission.give_back(admitted)
            raise

    def _connect(self) -> None:
        """Once per app: bootsteps, the fallback runner task, and the counting of publishes that
        skip the gate and of queued tasks that expired."""
        app = self.app
        for step in _BOOTSTEPS:
            app.steps["worker"].add(step)
        app.task(name=FALLBACK_TASK, bind=True, shared=False)(_run_fallbacks)
        send_task = app.send_task

        def gated_send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
            # Every publish of the app comes through here: what was admitted already (the
            # header is set) and plain tasks go straight on, at the cost of two lookups.
            headers = options.get("headers")
            registered = _registered(app)
            if (headers and HEADER in headers) or registered is None or name in registered._plain_names:
                return send_task(name, args, kwargs, **options)
            if name in registered.settings.admission.gated_tasks:
                return registered._send_gated(send_task, name, args, kwargs, options)
            if _is_plain_task(app, name):
                registered._plain_names.add(name)
            else:
                # A publish by name of a resilient (or unknown) task skips the gate: counted.
                count_ungated(registered.record)
            return send_task(name, args, kwargs, **options)

        app.send_task = gated_send_task  # type: ignore[method-assign,assignment]

        def on_revoked(
            sender: Task[Any, Any] | None = None, request: Any = None, expired: bool = False, **_: Any
        ) -> None:
            if not expired or sender is None or getattr(sender, "app", None) is not app:
                return
            registered = _registered(app)
            if registered is not None and getattr(request, HEADER, None) is not None:
                count_expired(registered.record)

        signals.task_revoked.connect(
            on_revoked, weak=False, dispatch_uid=f"celery_resilience:{id(app)}:revoked"
        )
        # How long each task of a fair queue runs: its queue's service rate, for the tags.
        started: dict[str, float] = {}

        def on_prerun(sender: Task[Any, Any] | None = None, task_id: str = "", **_: Any) -> None:
            registered = _registered(app)
            if (
                registered is not None
                and registered.fairness.policies
                and _fair_queue(app, sender) is not None
            ):
                started[task_id] = registered.clock.monotonic()

        def on_postrun(sender: Task[Any, Any] | None = None, task_id: str = "", **_: Any) -> None:
            began = started.pop(task_id, None)
            if began is None:  # not a fair queue's task: nothing more to read on every task
                return
            registered = _registered(app)
            queue = _fair_queue(app, sender)
            if registered is not None and queue is not None:
                registered.fairness.served(queue, registered.clock.monotonic() - began)

        signals.task_prerun.connect(on_prerun, weak=False, dispatch_uid=f"celery_resilience:{id(app)}:prerun")
        signals.task_postrun.connect(
            on_postrun, weak=False, dispatch_uid=f"celery_resilience:{id(app)}:postrun"
        )


def _run_fallbacks(
    task: Task[Any, Any],
    task_name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    reason: str,
    category: str,
    failed_breaker: str | None,
) -> Any:
    """Run ``task_name``'s fallback chain; its answer lands on the caller's task id. An
    exhausted chain is the task's failure, reported with every attempt as context."""
    return Resilience.of(task.app).answer_from_chain(
        task_name, args, kwargs, reason, category, failed_breaker
    )


def _fits(check: Callable[[ResilienceSettings], None], settings: ResilienceSettings) -> bool:
    try:
        check(settings)
    except ConfigurationError:
        return False
    return True


def _fair_queue(app: Celery, task: Any) -> str | None:
    """The queue a running task of ``app`` came from, when it is one of the app's fair queues."""
    if task is None or getattr(task, "app", None) is not app:
        return None
    registered = _registered(app)
    info = getattr(task.request, "delivery_info", None) or {}
    queue = info.get("routing_key")
    return queue if registered is not None and queue in registered.fairness.policies else None


def _is_plain_task(app: Celery, name: str) -> bool:
    """A registered task that is not gated (a plain ``@app.task``, Celery's own)."""
    task = app.tasks.get(name)
    return task is not None and not getattr(task, "resilience_gated", False)
