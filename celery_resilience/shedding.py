"""The worker's side of sojourn-time shedding (``load/sojourn.py``): how long an
``AITask``'s request waited in its queue, counted per queue, and whether it is shed.

The wait runs from the admission time the ``resilience`` header carries, or from the
task's ETA when it was paced (a countdown is not waiting in a queue).

Canvases are shed whole: a later step (published by the step before it, so it has a
parent) is never shed, or a chain whose first step ran would stop halfway; a chain's
first step is held to the deadline with its later steps' waits foreseen (each about its
own), and one whose result feeds later steps (a chain, a link) is shed by failing it with
``Throttled``, which Celery carries down the chain, so no later step runs on a fallback's
answer and the caller's result says what happened.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .extension import Resilience
from .fallbacks.result import FallbackResult
from .fallbacks.settings import SHED
from .monitoring.counters import count_dequeued

__all__ = ["shed_reason", "feeds_later_steps", "answer_shed"]


def shed_reason(task: Any, resilience: Resilience, context: dict[str, Any]) -> str | None:
    """Why this request is shed (None: it runs). Every request that carries its admission
    time is counted in its queue's sojourn."""
    admitted = context.get("at")
    if not isinstance(admitted, int | float) or isinstance(admitted, bool):
        return None
    request = task.request
    now = resilience.clock.now()
    start = max(float(admitted), _moment(request.eta))
    sojourn = max(0.0, now - start)
    queue = str((request.delivery_info or {}).get("routing_key") or task.queue or "")
    request_type = context.get("request_type")
    if not isinstance(request_type, str):
        request_type = task.request_type or resilience.settings.admission.default_request_type
    age = max(0.0, now - float(admitted))
    # The deadline is when the user is answered: the run ahead counts. A chain's first
    # step answers its user only once its later steps have run, and each of them will
    # wait in this queue about as long as it did and run about as long: all of that is
    # held against the deadline, so a chain starts only when it can still end in time.
    later = len(getattr(request, "chain", None) or ()) if request.parent_id is None else 0
    run = resilience.sojourn.run_time(task.name)
    projected = age + later * sojourn + (1 + later) * run
    shed = resilience.sojourn.shed(queue, request_type, sojourn, now, projected) and request.parent_id is None
    count_dequeued(resilience.record, queue, sojourn, shed)
    if not shed:
        return None
    policy = resilience.sojourn.policy(request_type)
    deadline = policy.deadline if policy is not None else 0.0
    steps = f" and {later} more steps would wait about as long" if later else ""
    return (
        f"waited {age:.1f}s ({sojourn:.1f}s in queue {queue!r}){steps}, with {projected - age:.1f}s "
        f"more foreseen past the {deadline:g}s deadline of {request_type!r} work, while the queue "
        "is overloaded"
    )


def answer_shed(task: Any, resilience: Resilience, args: Any, kwargs: Any, reason: str) -> FallbackResult:
    """The shed request answered here by its chain's steps that call no provider, as the
    task's own result: handed on as a new message, it would wait behind the very backlog
    it was shed from. An exhausted chain fails the task, reported with its attempts."""
    answer: FallbackResult = resilience.answer_from_chain(
        task.name, list(args), dict(kwargs), reason, SHED, task.breaker
    )
    return answer


def feeds_later_steps(request: Any) -> bool:
    """Whether the request's result is the input of more work (a chain's next step, a link)."""
    return bool(getattr(request, "chain", None) or getattr(request, "callbacks", None))


def _moment(eta: Any) -> float:
    """The ETA as seconds since the epoch (0 when there is none or it cannot be read)."""
    if isinstance(eta, datetime):
        return eta.timestamp()
    if isinstance(eta, str):
        try:
            return datetime.fromisoformat(eta).timestamp()
        except ValueError:
            return 0.0
    return 0.0
