"""The gate over one publish's options, shared by ``ResilientTask.apply_async`` and the
app's ``send_task`` (for task names configured as gated).

Our own keywords (``user_id``, ``tier``, ``request_type``) are popped before Celery sees
them, or they would leak into message properties; a near miss of one (``userid``,
``teir``) is refused with the right spelling rather than silently sent as a message
property. What a call leaves out comes from ``caller(...)``, and the tenant only from it
(the server names it, not the publish). The caller's context and the decision travel to
the worker in the ``resilience`` header. In a saturated fair queue, the publish is held
back for as long as its tenant's start tag says (``load/fairness.py``).

Publishes made by a worker on behalf of work already admitted pass: retries, chain
steps, links and errbacks (Celery sets ``parent_id``), and anything a running task
publishes for its own user or for none. They carry the running task's caller onwards.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from celery.signals import task_prerun

from .admission.caller import current_caller
from .admission.gate import Admission, Verdict
from .clock import Clock
from .load.fair_queue import FairQueues
from .load.fairness import priority_level
from .monitoring.counters import Count, count_ungated

__all__ = [
    "HEADER",
    "CALLER_KEYWORDS",
    "PublishGate",
    "take_caller_keywords",
    "running_context",
    "continued_context",
    "queue_name",
    "apply_countdown",
    "apply_expiry",
    "apply_verdict",
    "unit_cost",
]

# Message header carrying the caller's context and the admission decision.
HEADER = "resilience"
# In the header of a publish a fair queue held back for fairness alone (not paced by
# admission, no countdown of the caller's): when the hold ends (``load/release.py``
# starts it earlier on an idle worker).
FAIR_UNTIL = "fair_until"
CALLER_KEYWORDS = ("user_id", "tier", "request_type")
# What the header carries of the caller onwards (to chain steps, retries, callbacks).
_CONTEXT_KEYS = (*CALLER_KEYWORDS, "tenant")
# Options Celery's apply_async and send_task take (and message properties people set):
# never mistaken for a near miss of ours.
_CELERY_OPTIONS = frozenset(
    (
        "countdown",
        "eta",
        "expires",
        "retry",
        "retry_policy",
        "queue",
        "exchange",
        "routing_key",
        "priority",
        "serializer",
        "compression",
        "link",
        "link_error",
        "producer",
        "add_to_parent",
        "publisher",
        "headers",
        "ignore_result",
        "time_limit",
        "soft_time_limit",
        "task_id",
        "shadow",
        "chain",
        "chord",
        "group_id",
        "group_index",
        "root_id",
        "parent_id",
        "reply_to",
        "stamped_headers",
        "replaced_task_nesting",
        "result_cls",
        "connection",
        "router",
        "task_type",
        "declare",
        "delivery_mode",
        "mandatory",
        "immediate",
        "content_type",
        "content_encoding",
        "correlation_id",
        "expiration",
        "retries",
        "argsrepr",
        "kwargsrepr",
    )
)


_KNOWN_OPTIONS = _CELERY_OPTIONS | frozenset(CALLER_KEYWORDS)


def unit_cost() -> float:
    """What a request costs in a fair queue when nothing better is known: one task."""
    return 1.0


CallerKeywords = tuple[object, str | None, str | None, str | None]


def take_caller_keywords(options: dict[str, Any]) -> CallerKeywords:
    """Pop our keywords from ``options``; what they leave out comes from ``caller(...)``,
    as does the tenant (None: the user). Raises ``TypeError`` for a near miss of one of
    them, before anything is admitted."""
    if not options.keys() <= _KNOWN_OPTIONS:
        _refuse_near_misses(options)
    user_id = options.pop("user_id", None)
    tier = options.pop("tier", None)
    request_type = options.pop("request_type", None)
    around = current_caller()
    if around is None:
        return user_id, tier, request_type, None
    return (
        around.user_id if user_id is None else user_id,
        around.tier if tier is None else tier,
        around.request_type if request_type is None else request_type,
        around.tenant,
    )


def _refuse_near_misses(options: dict[str, Any]) -> None:
    for key in options:
        if key in _KNOWN_OPTIONS:
            continue
        spelled = key.lower().replace("-", "_")
        close = (
            [spelled]
            if spelled in CALLER_KEYWORDS
            else difflib.get_close_matches(spelled, CALLER_KEYWORDS, 1, 0.7)
        )
        if close:
            raise TypeError(f"unexpected keyword {key!r}: did you mean {close[0]!r}?")


class _ThisProcess:
    """Whether this process has run a task (as a worker, or eagerly). Until it has, no
    publish comes from inside one, and Celery's lookup of the running task (which raises
    and catches on every call made outside a task) is skipped: most publishes come from
    web processes."""

    ran_a_task = False


@task_prerun.connect(weak=False, dispatch_uid="celery_resilience.publishing.ran_a_task")
def _note_a_task_runs(**_: Any) -> None:
    _ThisProcess.ran_a_task = True


def _running_task(app: Any) -> Any:
    """The task this worker is running (a request with an id), None outside one."""
    # PublishGate.passes repeats the ran_a_task check inline, for speed (tests/plugin/test_speed_copies.py).
    running = app.current_worker_task if _ThisProcess.ran_a_task else None
    return None if running is None or getattr(running.request, "id", None) is None else running


def _context_of(running: Any) -> dict[str, Any]:
    context = getattr(running.request, HEADER, None)
    if not isinstance(context, dict):
        return {}
    return {key: context[key] for key in _CONTEXT_KEYS if key in context}


def running_context(app: Any) -> dict[str, Any]:
    """The caller's context (user, tier, request type) of the task this worker is running,
    empty when there is none. Celery publishes a task's callbacks, errbacks and next chain
    step while the task is still the current one."""
    running = _running_task(app)
    return {} if running is None else _context_of(running)


def continued_context(app: Any, user_id: object) -> dict[str, Any] | None:
    """The running task's context when this publish continues its work: made from inside a
    running task, for no user or for that task's own user. None otherwise."""
    running = _running_task(app)
    if running is None:
        return None
    context = _context_of(running)
    if user_id is not None and str(user_id) != context.get("user_id"):
        return None  # work for another user is a new request: it is admitted
    return context


def queue_name(queue: Any) -> str | None:
    if queue is None or isinstance(queue, str):
        return queue
    name = getattr(queue, "name", None)
    return name if isinstance(name, str) else None


class PublishGate:
    """Admission over a publish's options: ``passes`` for work already admitted, ``admit`` for
    a new request. ``anonymous`` says what a call naming no user gets: ``"shared"`` (one
    bucket per tier), ``"ungated"`` (published, counted) or ``"refuse"`` (``ValueError``)."""

    def __init__(
        self,
        admission: Admission,
        clock: Clock,
        anonymous: str,
        count: Count,
        fairness: FairQueues | None = None,
    ) -> None:
        self.admission = admission
        self.clock = clock
        self.anonymous = anonymous
        self._count = count
        self.fairness = fairness

    def passes(
        self, app: Any, options: dict[str, Any], headers: dict[str, Any], name: str, user_id: object
    ) -> bool:
        """Whether the publish continues admitted work (its header is then set)."""
        if options.get("retries") or "parent_id" in options or name.startswith("celery."):
            # Published by the worker for work already admitted (a retry, the next step of a
            # chain, a link or an errback), or Celery's own machinery.
            if HEADER not in headers:
                headers[HEADER] = {**running_context(app), "decision": "passed"}
            return True
        # Most publishes: no task runs in this process. A copy of _running_task's check,
        # inline for speed (tests/plugin/test_speed_copies.py).
        if not _ThisProcess.ran_a_task:
            return False
        inherited = continued_context(app, user_id)
        if inherited is None:
            return False
        # Published by a running task for its own user (fan-out, a chord's body).
        headers[HEADER] = {**inherited, "decision": "passed"}
        return True

    def admit(
        self,
        name: str,
        caller: CallerKeywords,
        task_request_type: str | None,
        *,
        queue: str | None,
        breaker: str | None,
        refusable: bool,
        headers: dict[str, Any],
        cost: Callable[[], float] = unit_cost,
    ) -> Verdict | None:
        """Decide a new request; the context and decision go into ``headers`` (the caller
        applies the verdict to the publish). None when an anonymous call passes ungated.
        ``cost`` is what the request is charged in a saturated fair queue."""
        user_id, tier, request_type, tenant = caller
        if user_id is None and self.anonymous != "shared":
            if self.anonymous == "refuse":
                raise ValueError(
                    f"{name}: a call must name its user (resilience_anonymous_calls='refuse'); pass "
                    "user_id=... or publish inside caller(user_id=...)"
                )
            count_ungated(self._count)
            headers[HEADER] = {"user_id": None, "decision": "ungated"}
            return None
        ctx, verdict = self.admission.admit_call(
            user_id, tier, request_type, task_request_type,
            task_name=name, queue=queue, breaker=breaker, refusable=refusable,
        )  # fmt: skip
        header: dict[str, Any] = ctx.header(verdict.label)
        headers[HEADER] = header
        if tenant is not None:
            header["tenant"] = tenant
        fairness = self.fairness
        if fairness is not None and queue is not None and queue in fairness.policies:
            weight = self.admission.settings.tiers[ctx.tier].weight
            delay = fairness.delay(queue, tenant if tenant is not None else ctx.user_id, weight, cost)
            if fairness.policies[queue].order == "priority":
                header["fair_priority"] = priority_level(delay)  # enter() sets the message's
                return verdict
            if delay > verdict.countdown:
                header["fair_delay"] = round(delay, 3)
                if verdict.countdown <= 0:  # held for fairness alone: a worker may start it early
                    header[FAIR_UNTIL] = round(self.clock.now() + delay, 3)
                return dataclasses.replace(verdict, countdown=delay)
        return verdict

    def enter(
        self,
        app: Any,
        name: str,
        args: Any,
        kwargs: Any,
        options: dict[str, Any],
        request_type: str | None,
        breaker: str | None,
        route: Callable[[str, Any, Any, dict[str, Any], Any], str | None],
        queue: Any = None,
        cost: Callable[[], float] = unit_cost,
    ) -> Verdict | None:
        """The one gate of every publish, by a task's ``apply_async`` or by name through
        ``send_task``: our keywords off the options, work already admitted passed, a new
        request admitted (``route(name, args, kwargs, options, queue)`` names its queue).
        The context header is set in ``options``; the verdict (None: nothing to apply or
        give back) is the caller's to apply, and to give back if the publish fails."""
        caller = take_caller_keywords(options)
        headers = dict(options.get("headers") or {})
        options["headers"] = headers
        if self.passes(app, options, headers, name, caller[0]):
            return None
        verdict = self.admit(
            name,
            caller,
            request_type,
            queue=route(name, args, kwargs, options, queue),
            breaker=breaker,
            # A group is refused at its first member or not at all: once that one is
            # published, a refusal would leave the rest of the group half run.
            refusable=not options.get("group_index"),
            headers=headers,
            cost=cost,
        )
        if self.fairness is not None:
            level = headers[HEADER].get("fair_priority")
            if level is not None and options.get("priority") is None:
                options["priority"] = self.fairness.message_priority(app, level)
            if options.get("eta") is not None or options.get("countdown"):
                headers[HEADER].pop(FAIR_UNTIL, None)  # the caller's own start: never earlier
        return verdict


def apply_verdict(options: dict[str, Any], verdict: Verdict, now: Callable[[], float]) -> None:
    """Merge the verdict's countdown and expiry into the publish's options (most verdicts
    have neither: the clock is read only when one has)."""
    if verdict.countdown <= 0 and verdict.expires is None:
        return
    at = now()
    apply_countdown(options, verdict.countdown, at)
    if verdict.expires is not None:
        apply_expiry(options, verdict.expires, at)


def apply_countdown(options: dict[str, Any], countdown: float, now: float) -> None:
    """Merge the verdict's countdown with the caller's own, keeping the later start."""
    if countdown <= 0:
        return
    eta = options.get("eta")
    if eta is not None:
        options["eta"] = max(_aware(eta), _moment(now + countdown))
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
