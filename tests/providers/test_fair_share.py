"""Fair shares of a provider budget: booked only while the budget holds calls back, at
the budget's own rate, and left to the budget alone when the store does not answer."""

from __future__ import annotations

from typing import Any

import pytest

from celery_resilience.errors import ConfigurationError, StoreUnavailable
from celery_resilience.providers.budget import REQUESTS, TOKENS, ProviderBudget, UnitBudget, stretched
from celery_resilience.providers.fair_share import FairShares
from celery_resilience.providers.quota import HELD_BACK_SECONDS, ProviderQuota
from celery_resilience.providers.settings import ProviderSettings, read_provider_settings
from celery_resilience.rates import parse_rate
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader


class _Store(MemoryStore):
    """A MemoryStore that counts its fair round trips, or fails them."""

    def __init__(self, clock: FakeClock, fail: bool = False) -> None:
        super().__init__(KeySpace("shares", 4), clock=clock)
        self.tags, self.fail = 0, fail

    def fair_tag(self, *args: Any, **kwargs: Any) -> Any:
        self.tags += 1
        if self.fail:
            raise StoreUnavailable("down")
        return super().fair_tag(*args, **kwargs)


def shares(clock: FakeClock, store: _Store, rate: str = "10/m") -> tuple[ProviderQuota, FairShares]:
    budget = ProviderBudget(((REQUESTS, UnitBudget(parse_rate(rate))),))
    settings = ProviderSettings({"openai": budget}, None, None, fair=frozenset({"openai"}))
    quota = ProviderQuota(settings, lambda: store, clock)
    return quota, FairShares(settings.fair, lambda: store, quota, clock)


def one() -> float:
    return 1.0


def test_spare_budget_books_no_turn_and_costs_no_round_trip() -> None:
    """Calls spread over the period, or a burst of a quarter of the count, go straight to the budget."""
    clock = FakeClock()
    store = _Store(clock)
    quota, fair = shares(clock, store)
    for _ in range(9):
        assert quota.take("openai") == 0.0
        clock.advance(6.0)
    clock.advance(60.0)
    assert quota.take("openai") == quota.take("openai") == 0.0
    assert fair.turn("openai", "noisy", 1.0, one, 5.0) is None
    assert store.tags == 0


def test_a_flood_is_seen_while_the_window_still_has_room() -> None:
    """A third of the count taken at once: running ahead of the rate, turns are booked with room left."""
    clock = FakeClock()
    store = _Store(clock)
    quota, fair = shares(clock, store)
    assert [quota.take("openai") for _ in range(3)] == [0.0] * 3
    assert quota.running_ahead("openai") and not quota.holding_back("openai")
    assert fair.turn("openai", "noisy", 1.0, one, 5.0) == (0.0, True)
    clock.advance(HELD_BACK_SECONDS + 0.01)
    assert not fair.saturated("openai")


def test_a_budget_holding_calls_back_gives_each_tenant_its_turn() -> None:
    """Held back: a flood's turns past one call ahead wait for the calls taken first, then the rate."""
    clock = FakeClock()
    store = _Store(clock)
    quota, fair = shares(clock, store)
    for _ in range(11):
        quota.take("openai")  # the eleventh waits: the budget holds calls back
    span = stretched(60)
    assert quota.lead("openai") == pytest.approx((10.0, span))  # ten at once: the window is full for a span
    per_call = span / 10  # the budget serves ten calls a stretched minute
    turns = [fair.turn("openai", "noisy", 1.0, one, 200.0) for _ in range(4)]
    expected = [0.0, 0.0, span + per_call, span + 2 * per_call]
    assert [t.wait if t else None for t in turns] == pytest.approx(expected)
    assert all(t is not None and t.booked for t in turns)
    assert fair.turn("openai", "quiet", 1.0, one, 20.0) == (0.0, True)
    over = fair.turn("openai", "noisy", 1.0, one, 20.0)
    assert over is not None and not over.booked  # its turn, among two, is further off than 20 s
    assert store.fair_status("openai", "provider")["over_share:noisy"] == 1.0


def test_saturation_lasts_while_a_turn_is_ahead() -> None:
    """A booked turn keeps the budget saturated until it is due, then the budget alone decides."""
    clock = FakeClock()
    store = _Store(clock)
    quota, fair = shares(clock, store, "60/m")
    for _ in range(61):
        quota.take("openai")
    turns = [fair.turn("openai", "noisy", 1.0, one, 200.0) for _ in range(4)]  # past the full window
    ahead = max(t.wait for t in turns if t is not None)
    clock.advance(HELD_BACK_SECONDS + 0.01)  # the budget's own wait is no longer recent
    assert fair.saturated("openai")
    clock.advance(ahead)
    assert not fair.saturated("openai") and fair.turn("openai", "noisy", 1.0, one, 60.0) is None


def test_a_store_that_does_not_answer_leaves_the_budget_alone() -> None:
    """No fair round trip answered: no turn, the call goes to the budget as without fair shares."""
    clock = FakeClock()
    store = _Store(clock, fail=True)
    quota, fair = shares(clock, store)
    for _ in range(11):
        quota.take("openai")
    assert fair.turn("openai", "noisy", 1.0, one, 5.0) is None and store.tags == 1


def test_a_token_budget_serves_its_rate_over_the_mean_a_call_reserves() -> None:
    """Tokens: no rate before a call; then the unit's rate over the mean reservation."""
    clock = FakeClock()
    store = _Store(clock)
    budget = ProviderBudget(((TOKENS, UnitBudget(parse_rate("6000/m"))),))
    quota = ProviderQuota(ProviderSettings({"openai": budget}, None, None), lambda: store, clock)
    assert quota.calls_per_second("openai") == 0.0
    quota.reserve("openai", "t", 100.0, 200.0)
    assert quota.calls_per_second("openai") == pytest.approx(6000 / stretched(60) / 300)
    assert quota.calls_per_second("elsewhere") == 0.0


def test_a_fair_provider_must_be_a_configured_budget() -> None:
    """A name that is not in resilience_providers fails at start-up, naming the setting."""
    conf = {"resilience_providers": {"openai": {"requests": "10/m"}}, "resilience_fair_providers": ["opena"]}
    with pytest.raises(ConfigurationError, match=r"resilience_fair_providers.*opena"):
        read_provider_settings(SettingsReader(conf))
    with pytest.raises(ConfigurationError, match="resilience_fair_providers"):
        read_provider_settings(SettingsReader({**conf, "resilience_fair_providers": "openai"}))
    good = read_provider_settings(SettingsReader({**conf, "resilience_fair_providers": ["openai"]}))
    assert good.fair == {"openai"}
