"""The retry budget's arithmetic, in the pure core and in both stores (memory and Redis's Lua)."""

from __future__ import annotations

import pytest

from celery_resilience.errors import ConfigurationError
from celery_resilience.providers.retry_budget import RetryBudget, RetryBudgets, retry_allowed
from celery_resilience.providers.settings import read_provider_settings
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader

BUDGET = RetryBudget(ratio=0.1, window=10.0, minimum=2, slices=10)


def test_retries_fit_the_minimum_plus_a_tenth_of_first_attempts() -> None:
    """Fifty first attempts and six retries in the window: the seventh (2 + 5) is refused."""
    assert retry_allowed({0: (50.0, 6.0)}, 0.5, BUDGET)
    assert not retry_allowed({0: (50.0, 7.0)}, 0.5, BUDGET)


def test_only_the_windows_slices_count() -> None:
    """Retries older than the window no longer spend the budget."""
    assert not retry_allowed({0: (0.0, 2.0)}, 9.5, BUDGET)
    assert retry_allowed({0: (0.0, 2.0)}, 10.5, BUDGET)


def test_a_store_gives_the_same_answers(store: Store, clock: FakeClock) -> None:
    """Redis's script and the memory store both allow exactly minimum + ratio * firsts retries."""
    store.retry_budget("openai", BUDGET, 30, ask=False)
    allowed = [store.retry_budget("openai", BUDGET, 0, ask=True) for _ in range(8)]
    assert allowed == [True] * 5 + [False] * 3
    clock.advance(10.5)  # the window has moved past every count
    assert store.retry_budget("openai", BUDGET, 0, ask=True)


def test_providers_have_budgets_of_their_own(store: Store) -> None:
    """A spent budget for one provider leaves another's untouched, even with a hostile name."""
    for _ in range(2):
        assert store.retry_budget("a", BUDGET, 0, ask=True)
    assert not store.retry_budget("a", BUDGET, 0, ask=True)
    assert store.retry_budget("a}:{retries", BUDGET, 0, ask=True)


def test_first_attempts_ride_along_with_the_next_question(store: Store, clock: FakeClock) -> None:
    """First attempts counted in the process reach the store with the retry that asks."""
    budgets = RetryBudgets(BUDGET, lambda: store, clock)
    for _ in range(20):
        budgets.first_attempt("openai")
    assert [budgets.allow_retry("openai") for _ in range(5)] == [True] * 4 + [False]


def test_the_setting_reads_a_budget_or_false() -> None:
    """Unset is the SRE book's budget, False is none, and a wrong key names the setting."""
    assert read_provider_settings(SettingsReader({})).retry_budget == RetryBudget()
    off = {"resilience_retry_budget": False}
    assert read_provider_settings(SettingsReader(off)).retry_budget is None
    given = {"resilience_retry_budget": {"ratio": 0.2, "minimum": 0}}
    assert read_provider_settings(SettingsReader(given)).retry_budget == RetryBudget(ratio=0.2, minimum=0)
    with pytest.raises(ConfigurationError, match="resilience_retry_budget"):
        read_provider_settings(SettingsReader({"resilience_retry_budget": {"share": 0.1}}))
