"""The decision after a failed call, without Celery: retry, fall back or raise."""

from __future__ import annotations

from celery_resilience.breakers.classification import Category, Classification
from celery_resilience.breakers.decision import Next, after_failure

RATE_LIMIT = Classification(Category.RATE_LIMIT, 1.0, 2.0)
BAD_REQUEST = Classification(Category.BAD_REQUEST, 0.0, None)
IGNORED = Classification(Category.IGNORED, 0.0, None)


def decide(outcome: Classification | None, **given: object) -> Next:
    options: dict[str, object] = {
        "is_exception": True,
        "direct": False,
        "retries_left": True,
        "retry_allowed": lambda: True,
        "can_fall_back": True,
        **given,
    }
    return after_failure(outcome, **options)  # type: ignore[arg-type]


def test_a_retryable_failure_is_retried_while_retries_and_the_budget_allow() -> None:
    """A 429 with retries left is retried; without retries, or refused by the budget, the chain answers."""
    assert decide(RATE_LIMIT) is Next.RETRY
    assert decide(RATE_LIMIT, retries_left=False) is Next.FALL_BACK
    assert decide(RATE_LIMIT, retry_allowed=lambda: False) is Next.FALL_BACK
    assert decide(RATE_LIMIT, retry_allowed=lambda: False, can_fall_back=False) is Next.RAISE


def test_the_retry_budget_is_asked_last() -> None:
    """A retry the rule would not make takes nothing from the fleet's retry budget."""
    asked: list[bool] = []

    def allowed() -> bool:
        asked.append(True)
        return True

    decide(BAD_REQUEST, retry_allowed=allowed)
    decide(RATE_LIMIT, direct=True, retry_allowed=allowed)
    assert asked == []
    decide(RATE_LIMIT, retry_allowed=allowed)
    assert asked == [True]


def test_what_no_policy_covers_is_raised() -> None:
    """Unclassified, ignored, or not an Exception: raised, chain or not; inline, a 429 is not retried."""
    assert decide(None) is Next.RAISE
    assert decide(IGNORED) is Next.RAISE
    assert decide(RATE_LIMIT, is_exception=False) is Next.RAISE
    assert decide(RATE_LIMIT, direct=True, can_fall_back=False) is Next.RAISE
    assert decide(BAD_REQUEST) is Next.FALL_BACK and Next.FALL_BACK.handled and not Next.RAISE.handled
