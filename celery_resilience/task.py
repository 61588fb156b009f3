"""``ResilientTask``: the admission gate in ``apply_async``.

The gate must sit here, not in ``before_task_publish``: a signal handler cannot stop
or reschedule a publish. Our own keywords (``user_id``, ``tier``, ``request_type``) are
popped before Celery sees them, or they would leak into message properties; the
context travels to the worker in the ``resilience`` header.

A group (or a chord's header) is admitted member by member, in order, and refused only
at its first member: a later member over the limit is paced at its slot instead, so a
caller holds either the whole group's result or a ``Throttled`` with nothing published.

Publishes made by a worker on behalf of work already admitted pass the gate: retries
(``self.retry`` sets ``retries``), chain steps and callbacks (Celery sets ``parent_id``
explicitly), and anything a running task publishes for its own user or for none (fan-out,
a chord's body published by the result backend, which carries the caller's options),
inheriting the running task's context. Refusing those at publish time would lose the
task. A running task's publish for another user is admitted like any call. Celery's
own ``celery.*`` tasks (chord unlocking, result clean-up) pass too: with
``ResilientTask`` as the app's default task class they inherit it, but they are
machinery, not user work.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from celery import Task

from .admission.gate import Verdict
from .errors import ConfigurationError
from .extension import HEADER, Resilience
from .settings import ResilienceSettings
from .validation import did_you_mean as _did_you_mean

__all__ = ["ResilientTask"]

_BUILTIN_PREFIX = "celery."
# What of the caller's context work published on its behalf carries onwards.
_CALLER_KEYS = ("user_id", "tier", "request_type")


class ResilientTask(Task):  # type: ignore[type-arg]
    """A task whose publishes are admitted per user, tier and request type.

    Set ``request_type`` on the task (or per call) to one of
    ``resilience_request_types``; unset, the ``resilience_default_request_type`` applies.
    """

    request_type: str | None = None
    # Marks tasks whose publishes go through the gate (a publish by name of one is counted).
    resilience_gated = True

    @classmethod
    def bind(cls, app: Any) -> Any:
        """Bound to its app (when defined, or when the app is finalized): a wrong attribute
        fails here, naming the task, not at its first publish."""
        bound = super().bind(app)
        resilience = Resilience.registered(app)
        if resilience is None or not getattr(cls, "name", None):
            return bound
        try:
            cls.check_configuration(resilience.settings)
        except ConfigurationError:
            # Celery adds every shared task to every app of the process: one declared for
            # another app, whose settings it fits, is not this app's mistake.
            if not any(
                cls._fits(other.settings) for other in Resilience.all_registered() if other is not resilience
            ):
                raise
        return bound

    @classmethod
    def _fits(cls, settings: ResilienceSettings) -> bool:
        try:
            cls.check_configuration(settings)
        except ConfigurationError:
            return False
        return True

    @classmethod
    def check_configuration(cls, settings: ResilienceSettings) -> None:
        """Raise ``ConfigurationError`` naming the task's attribute that the settings contradict."""
        request_types = settings.admission.request_types
        if cls.request_type is not None and cls.request_type not in request_types:
            raise ConfigurationError(
                f"{cls.name}.request_type",
                f"a request type named in resilience_request_types {sorted(request_types)}"
                + _did_you_mean(cls.request_type, request_types),
                cls.request_type,
            )

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> Any:
        user_id = options.pop("user_id", None)
        tier = options.pop("tier", None)
        request_type = options.pop("request_type", None)
        headers = dict(options.get("headers") or {})
        admitted = self._gate(args, kwargs, options, headers, user_id, tier, request_type)
        options["headers"] = headers
        options.update(task_id=task_id, producer=producer, link=link, link_error=link_error, shadow=shadow)
        try:
            return self._publish(args, kwargs, options)
        except Exception:
            if admitted is not None:  # nothing was published: the caller keeps their allowance
                Resilience.of(self.app).admission.give_back(admitted)
            raise

    def _gate(
        self,
        args: Any,
        kwargs: Any,
        options: dict[str, Any],
        headers: dict[str, Any],
        user_id: object,
        tier: str | None,
        request_type: str | None,
    ) -> Verdict | None:
        """Pass the publish (work already admitted) or admit it: the context and decision go into
        ``headers``, the schedule into ``options``. Returns the verdict of an admission."""
        if options.get("retries") or "parent_id" in options or self.name.startswith(_BUILTIN_PREFIX):
            # Published by the worker for work already admitted (a retry, the next step of a
            # chain, a link or an errback): it carries the running task's caller onwards.
            if HEADER not in headers:
                headers[HEADER] = {**_running_context(self.app), "decision": "passed"}
            return None
        inherited = _continued_context(self.app, user_id)
        if inherited is not None:
            # Published by a running task for its own user (fan-out, a chord's body): work
            # already admitted; it passes, carrying the running task's context.
            headers[HEADER] = {**inherited, "decision": "passed"}
            return None
        resilience = Resilience.of(self.app)
        admission = resilience.admission
        ctx = admission.context(user_id, tier, request_type, self.request_type)
        verdict = admission.decide(
            ctx,
            task_name=self.name,
            queue=self._target_queue(resilience, args, kwargs, options),
            breaker=getattr(self, "breaker", None),
            # A group is refused at its first member or not at all: once that one is
            # published, a refusal would leave the rest of the group half run.
            refusable=not options.get("group_index"),
        )
        header: dict[str, Any] = {**ctx.as_header(), "decision": verdict.label}
        headers[HEADER] = header
        self._schedule(resilience, options, verdict, header)
        return verdict

    def _schedule(
        self, resilience: Resilience, options: dict[str, Any], verdict: Verdict, header: dict[str, Any]
    ) -> None:
        """Apply the verdict's countdown and expiry to the publish (a subclass may keep the
        expiry in ``header`` instead, to act on it itself)."""
        now = resilience.clock.now()
        apply_countdown(options, verdict.countdown, now)
        if verdict.expires is not None:
            apply_expiry(options, verdict.expires, now)

    def _publish(self, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
        """Publish the admitted call (a subclass may publish something else under its id)."""
        return super().apply_async(args, kwargs, **options)

    def _target_queue(
        self, resilience: Resilience, args: Any, kwargs: Any, options: dict[str, Any]
    ) -> str | None:
        """The queue this publish lands in: the call's, the task's, the router's, the default."""
        explicit = _queue_name(options.get("queue")) or _queue_name(getattr(self, "queue", None))
        if explicit is not None:
            return explicit
        routes, default_queue = resilience.routing()
        if routes:
            routed = self.app.amqp.router.route(dict(options), self.name, args, kwargs)
            return _queue_name(routed.get("queue"))
        return default_queue

    @property
    def resilience_context(self) -> dict[str, Any]:
        """On the worker: the caller's context and the admission decision, from the headers."""
        value = getattr(self.request, HEADER, None)
        return dict(value) if isinstance(value, dict) else {}


def _running_context(app: Any) -> dict[str, Any]:
    """The caller's context (user, tier, request type) of the task this worker is running,
    empty when there is none. Celery publishes a task's callbacks, errbacks and next chain
    step while the task is still the current one."""
    running = app.current_worker_task
    if running is None or getattr(running.request, "id", None) is None:
        return {}
    context = getattr(running.request, HEADER, None)
    if not isinstance(context, dict):
        return {}
    return {key: context[key] for key in _CALLER_KEYS if key in context}


def _continued_context(app: Any, user_id: object) -> dict[str, Any] | None:
    """The running task's context when this publish continues its work: made from inside a
    running task, for no user or for that task's own user. None otherwise."""
    running = app.current_worker_task
    if running is None or getattr(running.request, "id", None) is None:
        return None
    context = _running_context(app)
    if user_id is not None and str(user_id) != context.get("user_id"):
        return None  # work for another user is a new request: it is admitted
    return context


def _queue_name(queue: Any) -> str | None:
    if queue is None or isinstance(queue, str):
        return queue
    name = getattr(queue, "name", None)
    return name if isinstance(name, str) else None


def apply_countdown(options: dict[str, Any], countdown: float, now: float) -> None:
    """Merge the verdict's countdown with the caller's own, keeping the later start."""
    if countdown <= 0:
        return
    eta = options.get("eta")
    if eta is not None:
        earliest = _moment(now + countdown)
        options["eta"] = max(_aware(eta), earliest)
    else:
        options["countdown"] = max(float(options.get("countdown") or 0), countdown)


def apply_expiry(options: dict[str, Any], expires: float, now: float) -> None:
    """Merge the verdict's expiry with the caller's own, keeping the earlier deadline."""
    deadline = _moment(now + expires)
    caller = options.get("expires")
    if isinstance(caller, int | float):
        caller = _moment(now + caller)
    options["expires"] = deadline if caller is None else min(_aware(caller), deadline)


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
