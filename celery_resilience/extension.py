"""``Resilience(app)``: validate the settings once, open the store lazily, connect signals.

One extension object per app, kept in a weak registry rather than on the app so two
apps in one process (tests, multi-tenant workers) never see each other's state.
"""

from __future__ import annotations

import logging
import threading
import weakref
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from celery import Celery, signals

from .admission import Admission, SeveritySource
from .alerting import AlertSender
from .alerts import breaker_trip_alert
from .backpressure import QueueDepths
from .bootsteps import AlertMonitorStep, ConfigurationCheck, HealthHeartbeat
from .breaker import Recorded
from .breakers import Breakers, Call
from .config_helpers import did_you_mean
from .errors import ConfigurationError
from .fallback_settings import BUILT_IN_STEPS
from .integrations.sentry import SentrySink
from .keys import KeySpace
from .monitor import LoadMonitor
from .quota import ProviderQuota
from .semantic_cache import SemanticCache
from .settings import ResilienceSettings
from .store import Store, masked_url, open_store
from .store.base import Clock
from .store.metrics_fields import EXPIRED, STORE_UNAVAILABLE, UNGATED

if TYPE_CHECKING:
    from celery import Task

__all__ = ["Resilience", "HEADER"]

logger = logging.getLogger("celery_resilience")

# Message header carrying the caller's context and the admission decision.
HEADER = "resilience"
# The built-in task that runs a fallback chain under the caller's task id.
FALLBACK_TASK = "celery_resilience.fallback"

_registry: weakref.WeakKeyDictionary[Celery, Resilience] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


class Resilience:
    """The plugin, bound to one Celery app.

    ``store`` and ``clock`` replace the configured store or its clock (tests, demos);
    ``severity`` plugs in a load-severity source.
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
        self._routing: tuple[bool, str] | None = None
        self.settings = ResilienceSettings.from_conf(
            app.conf, broker_url=app.conf.broker_url, namespace=getattr(app, "namespace", None)
        )
        self.keys = KeySpace(self.settings.key_prefix, self.settings.key_shards)

        def factory() -> Store:
            if store is not None:
                return store
            return open_store(
                self.settings.store_url,
                self.keys,
                timeout=self.settings.store_timeout,
                clock=clock,
                metrics_ttl=self.settings.metrics_ttl,
            )

        self.admission = Admission(self.settings, factory, severity)
        self.sentry = SentrySink(self.settings.sentry_dsn)
        self.alerts = AlertSender(self, self.sentry)
        self.breakers = Breakers(
            self.settings.breakers,
            lambda: self.admission.store,
            self.settings.classifier,
            retry_interval=self.settings.store_retry_interval,
            count=self.record,
            on_trip=self._breaker_tripped,
        )
        self.quota = ProviderQuota(self.settings.providers, lambda: self.admission.store)
        load = self.settings.load
        self.depths = QueueDepths(app, load.depth_interval) if load.queue_thresholds else None
        self.load = LoadMonitor(load, lambda: self.admission.store, self.depths, self.breakers.cached_state)
        self.admission.severity = severity if severity is not None else self.load
        self.admission.load = self.load
        fallbacks = self.settings.fallbacks
        self.cache = SemanticCache(
            lambda: self.admission.store,
            fallbacks.embedder,
            similarity=fallbacks.cache_similarity,
            min_quality=fallbacks.cache_quality,
            ttl=fallbacks.cache_ttl,
            max_age=fallbacks.cache_max_age,
            max_entries=fallbacks.cache_max_entries,
        )
        if store is None:
            self._check_store()
        with _registry_lock:
            previous = _registry.get(app)
            _registry[app] = self
        if getattr(app, "finalized", False):  # tasks bound before the plugin was: check them now
            for task in list(app.tasks.values()):
                check = getattr(type(task), "check_for", None)
                if check is not None:
                    check(self)
        if previous is None:
            self._connect_signals()
            self._count_ungated_publishes()
            app.steps["worker"].add(HealthHeartbeat)
            app.steps["worker"].add(AlertMonitorStep)
            app.steps["worker"].add(ConfigurationCheck)
            app.task(name=FALLBACK_TASK, bind=True, shared=False)(_run_fallbacks)

    @classmethod
    def registered(cls, app: Celery) -> Resilience | None:
        """The app's extension if ``Resilience(app)`` was called, else None."""
        return _registry.get(app)

    @classmethod
    def all_registered(cls) -> list[Resilience]:
        """Every app's extension in this process."""
        return list(_registry.values())

    @classmethod
    def of(cls, app: Celery) -> Resilience:
        """The app's extension, created with the app's settings on first use."""
        found = _registry.get(app)
        return found if found is not None else cls(app)

    @property
    def store(self) -> Store:
        return self.admission.store

    def routing(self) -> tuple[bool, str]:
        """Whether the app routes tasks, and its default queue: read once, on the first publish
        (Celery's settings are slow to read, and final by the time anything is published)."""
        if self._routing is None:
            self._routing = (bool(self.app.conf.task_routes), str(self.app.conf.task_default_queue))
        return self._routing

    def guard(self, breaker: str) -> AbstractContextManager[Call]:
        """Guard one call inside any task: ``with Resilience.of(app).guard("openai"): ...``.
        Raises ``CircuitOpen`` when the breaker refuses; records the outcome either way."""
        return self.breakers.guard(breaker)

    def record(self, fields: dict[str, float]) -> None:
        """Count into the store's metrics; a store outage is counted locally, never raised."""
        try:
            self.store.count(fields)
        except Exception as error:  # the store's own errors and anything a custom store raises
            self.admission.stats[STORE_UNAVAILABLE] += 1
            logger.debug("could not record %s: %s", fields, error)

    def _check_store(self) -> None:
        """At start-up, say once and clearly that the store does not answer, and what happens
        meanwhile; the application starts all the same (the store may come up later)."""
        url = self.settings.store_url
        if url.startswith("memory://"):
            return
        from .store.redis import unreachable  # redis-py is imported only for a Redis store

        problem = unreachable(url, self.settings.store_timeout)
        if problem is not None:
            policy = (
                "open: calls are published unchecked"
                if self.settings.fail_open
                else ("closed: calls are refused with AdmissionUnavailable")
            )
            logger.error(
                "the resilience store at %s is unreachable (%s). Until it answers, admission fails %s "
                "(resilience_admission_on_store_failure) and breakers run on each process's own state; "
                "what was counted meanwhile reaches the metrics once it answers.",
                masked_url(url),
                problem,
                policy,
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

    def _breaker_tripped(self, name: str, recorded: Recorded) -> None:
        """A trip is urgent: the process whose outcome caused it alerts at once, not a monitor
        tick later (the monitor's claim on the same cool-down stops a second alert)."""
        rule = self.settings.alerts["breaker_tripped"]
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

    def _count_ungated_publishes(self) -> None:
        """``app.send_task`` by name skips ``apply_async`` and its gate: count such publishes of
        resilient (or unknown) tasks as ``ungated``. Wrapping this app's own ``send_task``
        attributes each publish to its app, which a process-wide signal cannot."""
        app = self.app
        send_task = app.send_task

        def counted_send_task(name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
            headers = options.get("headers") or {}
            if HEADER not in headers and not _is_plain_task(app, name):
                registered = _registry.get(app)
                if registered is not None:
                    registered.record({UNGATED: 1})
            return send_task(name, args, kwargs, **options)

        app.send_task = counted_send_task  # type: ignore[method-assign,assignment]

    def _connect_signals(self) -> None:
        app = self.app
        uid = f"celery_resilience:{id(app)}"

        def on_revoked(
            sender: Task[Any, Any] | None = None, request: Any = None, expired: bool = False, **_: Any
        ) -> None:
            if not expired or sender is None or getattr(sender, "app", None) is not app:
                return
            if getattr(request, HEADER, None) is None:
                return
            ext = _registry.get(app)
            if ext is not None:
                ext.record({EXPIRED: 1})

        signals.task_revoked.connect(on_revoked, weak=False, dispatch_uid=f"{uid}:revoked")


def _run_fallbacks(
    task: Task[Any, Any],
    task_name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    reason: str,
    category: str,
    failed_breaker: str | None,
) -> Any:
    """Run ``task_name``'s fallback chain; its answer lands on the caller's task id."""
    from .fallback import run_chain

    return run_chain(task.app, task_name, args, kwargs, reason, category, failed_breaker)


def _is_plain_task(app: Celery, name: str) -> bool:
    from .task import ResilientTask

    task = app.tasks.get(name)
    return task is not None and not isinstance(task, ResilientTask)
