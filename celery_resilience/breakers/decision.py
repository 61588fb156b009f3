"""What an ``AITask`` does after its call failed: retry, fall back, or raise.

One rule, used twice: by the task, to act, and by error reporting, to say in advance
whether the failure it is about to report will be handled (so that a 429 the task then
retries is not an unhandled error in Sentry). It needs no Celery, as Celery keeps its
autoretry apart from its task class.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from .classification import Category, Classification

__all__ = ["Next", "after_failure"]


class Next(Enum):
    RETRY = "retry"
    FALL_BACK = "fall_back"
    RAISE = "raise"

    @property
    def handled(self) -> bool:
        return self is not Next.RAISE


def after_failure(
    outcome: Classification | None,
    *,
    is_exception: bool,
    direct: bool,
    retries_left: bool,
    retry_allowed: Callable[[], bool],
    can_fall_back: bool,
) -> Next:
    """A failure no rule classifies (or one to ignore, or not an ``Exception``) is raised;
    a retryable one is retried while retries are left and the fleet's retry budget
    allows (``retry_allowed`` is asked last: it takes a retry); otherwise the chain
    answers when there is one, else the error is raised. A call run inline (``direct``,
    a fallback step) never retries: its chain goes on to the next step instead."""
    if outcome is None or outcome.category is Category.IGNORED or not is_exception:
        return Next.RAISE
    if outcome.retryable and not direct and retries_left and retry_allowed():
        return Next.RETRY
    return Next.FALL_BACK if can_fall_back else Next.RAISE
