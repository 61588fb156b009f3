"""``ResilientTask``: the admission gate in ``apply_async``.

The gate must sit here, not in ``before_task_publish``: a signal handler cannot stop
or reschedule a publish. ``publishing`` holds the gate itself, which the app's
``send_task`` shares for task names configured as gated.

A group (or a chord's header) is admitted member by member, in order, and refused only
at its first member: a later member over the limit is paced at its slot instead, so a
caller holds either the whole group's result or a ``Throttled`` with nothing published.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from .admission.gate import Verdict
from .errors import ConfigurationError
from .extension import Resilience
from .publishing import HEADER, apply_verdict, unit_cost
from .settings import ResilienceSettings
from .validation import choice

__all__ = ["ResilientTask"]


class ResilientTask(Task):  # type: ignore[type-arg]
    """A task whose publishes are admitted per user, tier and request type.

    Set ``request_type`` on the task (or per call) to one of
    ``resilience_request_types``; unset, the ``resilience_default_request_type`` applies.
    """

    request_type: str | None = None
    # Read on every publish, so declared here (``getattr`` with a default raises and
    # catches inside on every call when the class has no such attribute): the task's own
    # queue (``@app.task(queue=...)``) and the breaker its calls go through (``AITask``).
    queue: Any = None
    breaker: str | None = None
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
        if cls.request_type is not None:
            choice(
                f"{cls.name}.request_type",
                cls.request_type,
                request_types,
                f"a request type named in resilience_request_types {sorted(request_types)}",
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
        # A bound task's app, without the two calls of Celery's ``app`` descriptor.
        app = self._app if self.__bound__ else self.app  # type: ignore[attr-defined]
        resilience = Resilience.of(app)
        gate = resilience.gate
        admitted = gate.enter(
            app,
            self.name,
            args,
            kwargs,
            options,
            self.request_type,
            self.breaker,
            resilience.route,
            self.queue,
            # Asked only of a saturated fair queue; none configured, no closure per publish.
            unit_cost if gate.fairness is None else lambda: self.fair_cost(args, kwargs),
        )
        if admitted is not None:
            self._schedule(resilience, options, admitted, options["headers"][HEADER])
        # Celery's own defaults are None: only what the call gave goes back in.
        if task_id is not None:
            options["task_id"] = task_id
        if producer is not None:
            options["producer"] = producer
        if link is not None:
            options["link"] = link
        if link_error is not None:
            options["link_error"] = link_error
        if shadow is not None:
            options["shadow"] = shadow
        try:
            return self._publish(args, kwargs, options)
        except Exception:
            if admitted is not None:  # nothing was published: the caller keeps their allowance
                resilience.admission.give_back(admitted)
            raise

    def fair_cost(self, args: Any, kwargs: Any) -> float:
        """What a call is charged in a saturated fair queue (``resilience_fair_queues``):
        one task; an ``AITask`` whose provider counts tokens charges the tokens it reserves."""
        return 1.0

    def _schedule(
        self, resilience: Resilience, options: dict[str, Any], verdict: Verdict, header: dict[str, Any]
    ) -> None:
        """Apply the verdict's countdown and expiry to the publish (a subclass may keep the
        expiry in ``header`` instead, to act on it itself)."""
        apply_verdict(options, verdict, resilience.clock.now)

    def _publish(self, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
        """Publish the admitted call (a subclass may publish something else under its id)."""
        return super().apply_async(args, kwargs, **options)

    @property
    def resilience_context(self) -> dict[str, Any]:
        """On the worker: the caller's context and the admission decision, from the headers."""
        value = getattr(self.request, HEADER, None)
        return dict(value) if isinstance(value, dict) else {}
