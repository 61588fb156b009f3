"""Answering at enqueue what admission refused under the ``answer`` strategy.

A user refused at the height of a surge rarely comes back after ``retry_after``: the
request is lost to them. Under ``answer`` an ``AITask`` with a fallback chain answers it
at once, in the publishing process, from the chain's steps that call no provider (the
``throttled`` category of ``resilience_fallback_policy``: a cached similar answer, rules,
a template), labelled as a ``FallbackResult``. The answer is stored under the call's task
id in the result backend, as a worker's would be, and the caller gets a result that is
already ready. Nothing is published: the overloaded queue and provider see no more work.

The refusal stands (``Throttled`` reaches the caller) when the task has no chain, when
none of its cheap steps answers, and when the call's result feeds later work (a link, the
next step of a chain, a chord): answering the first step without running the rest would
leave the canvas half done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import states
from celery.backends.base import DisabledBackend
from celery.result import EagerResult
from kombu.utils.uuid import uuid

from .errors import FallbackExhausted, Throttled
from .extension import Resilience
from .fallbacks.settings import THROTTLED

__all__ = ["answer_refused"]

# Options that make the call's result the input of more work.
_CANVAS_OPTIONS = ("link", "chain", "chord", "group_id")


def answer_refused(
    task: Any, refused: Throttled, args: Any, kwargs: Any, task_id: str | None, options: Mapping[str, Any]
) -> EagerResult[Any]:
    """The refused call answered by the cheap end of ``task``'s chain, or ``refused`` raised."""
    resilience = Resilience.of(task.app)
    if not resilience.fallbacks.chain(task) or any(options.get(name) for name in _CANVAS_OPTIONS):
        raise refused
    try:
        answer = resilience.fallbacks.run(
            task.name, list(args or ()), dict(kwargs or {}), refused.reason, THROTTLED, task.breaker
        )
    except FallbackExhausted as exhausted:
        raise refused from exhausted
    task_id = task_id or uuid()
    backend = task.backend
    if not isinstance(backend, DisabledBackend) and not task.ignore_result:
        backend.store_result(task_id, answer, states.SUCCESS)
    return EagerResult(task_id, answer, states.SUCCESS, name=task.name)
