"""The provider budget in requests, on both stores: a sliding window, as providers count."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_resilience.monitoring.counters import PROVIDER_SCOPE
from celery_resilience.providers.budget import REQUESTS, TOKENS, ProviderBudget, Taken, UnitBudget, stretched
from celery_resilience.providers.learned import READ, SLOW_START
from celery_resilience.providers.quota import ProviderQuota
from celery_resilience.providers.settings import ProviderSettings
from celery_resilience.rates import Rate, parse_rate
from celery_resilience.store import MemoryStore, Store
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock


def budget(rate: str, name: str = "openai") -> ProviderSettings:
    return requests_budget(parse_rate(rate), name)


def requests_budget(rate: Rate, name: str) -> ProviderSettings:
    return ProviderSettings({name: ProviderBudget(((REQUESTS, UnitBudget(rate)),))}, None, None)


def most_in_any_window(moments: list[float], window: float) -> int:
    """The largest number of ``moments`` inside one window of that length (as a provider counts)."""
    return max(bisect.bisect_left(moments, start + window) - index for index, start in enumerate(moments))


def test_the_whole_count_goes_out_then_the_oldest_call_names_the_wait(store: Store, clock: FakeClock) -> None:
    """10/m: ten calls at once, then the wait until the first leaves the (stretched) window."""
    quota = ProviderQuota(budget("10/m"), lambda: store)
    assert [quota.take("openai") for _ in range(10)] == [0.0] * 10
    assert quota.take("openai") == pytest.approx(stretched(60))
    provider = store.metrics(scope=PROVIDER_SCOPE)
    assert provider["admitted@openai"] == 10 and provider["throttled@openai"] == 1
    assert "admitted" not in store.metrics()  # user admission metrics are untouched
    clock.advance(stretched(60))
    assert quota.take("openai") == 0.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(min_value=1, max_value=150),
    period=st.sampled_from([1.0, 3.0, 60.0, 3600.0]),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=20),
)
def test_no_window_of_the_period_sees_more_than_the_count(
    count: int, period: float, gaps: list[float]
) -> None:
    """Taken as fast as it allows, or at any pace, no window of one period holds more than the count."""
    clock = FakeClock()
    store = MemoryStore(KeySpace("q", 1), clock=clock)
    quota = ProviderQuota(requests_budget(Rate(count, period), "p"), lambda: store)
    start, calls, step = clock(), [], 0
    while clock() - start < 4 * period:
        wait = quota.take("p")
        if wait <= 0:
            calls.append(clock() - start)
            clock.advance(gaps[step % len(gaps)] * period / max(1, count))
            step += 1
        else:
            clock.advance(wait + 1e-6)  # past float rounding at epoch-sized times
    assert most_in_any_window(calls, period) <= count
    if all(gap == 0 for gap in gaps):  # as fast as it allows: a whole count per stretched window
        assert len(calls) >= 3 * count


def test_a_429_fills_the_window_for_the_wait_the_provider_named(store: Store, clock: FakeClock) -> None:
    """After a 429 with Retry-After 20, no call is granted for 20 s, whatever was left."""
    quota = ProviderQuota(budget("10/m"), lambda: store)
    quota.take("openai")
    quota.drain("openai", 20.0)
    assert quota.take("openai") == pytest.approx(20.0)
    clock.advance(20.0)
    assert quota.take("openai") == 0.0
    assert store.metrics()["provider_429:openai"] == 1


def test_a_429_without_retry_after_fills_one_period(store: Store) -> None:
    """No Retry-After: the budget is spent for one period."""
    quota = ProviderQuota(budget("100/m"), lambda: store)
    quota.drain("openai", None)
    assert quota.take("openai") == pytest.approx(60.0)


def learned_budget(rate: str) -> ProviderSettings:
    return ProviderSettings(
        {"p": ProviderBudget(((REQUESTS, UnitBudget(parse_rate(rate), learned=True)),))}, None, None
    )


def test_a_429_cuts_a_learned_unit_to_the_limit_its_window_shows(store: Store, clock: FakeClock) -> None:
    """Sixty calls a second apart, a 429 saying 30 s: the calls the provider counts then, plus one."""
    quota = ProviderQuota(learned_budget("100/m"), lambda: store, clock)
    for _ in range(60):
        assert quota.take("p") == 0.0
        clock.advance(1.0)
    # Whole seconds are rounded up: the provider takes a call again at 89.5 s, and its own
    # minute (not the window's stretched span) then counts the calls made after 29.5 s.
    quota.drain("p", 30.0)
    assert store.learn("p", REQUESTS, READ, 100 / 60, 0.0) == pytest.approx(31 / 60)


def test_a_learned_token_unit_reserves_the_mean_output_and_a_stated_one_the_high_percentile(
    store: Store,
) -> None:
    """Without max_tokens, a stated limit reserves the 99th percentile; one learned from 429s the mean."""

    def quota(learned: bool) -> ProviderQuota:
        unit = UnitBudget(parse_rate("60000/m"), learned=learned)
        return ProviderQuota(
            ProviderSettings({"p": ProviderBudget(((REQUESTS, unit), (TOKENS, unit)))}, None, None),
            lambda: store,
        )

    stated, learned = quota(False), quota(True)
    for found in (stated, learned):
        for tokens in range(1, 101):
            found.outputs.observe("t", float(tokens))
    assert stated.estimate("p", "t", None, None) == (0.0, 99.0)
    assert learned.estimate("p", "t", None, None) == (0.0, 50.5)
    assert learned.estimate("p", "t", None, 500) == (0.0, 500.0)  # max_tokens is what is counted
    learned.learned.stated("p", TOKENS, 1000.0, 1000.0)  # a response stated the limit
    assert learned.estimate("p", "t", None, None) == (0.0, 99.0)


def test_a_learned_unit_grows_while_it_refuses_calls(store: Store, clock: FakeClock) -> None:
    """A guess the calls fill grows by slow start on each refusal, before any call succeeds again."""
    quota = ProviderQuota(learned_budget("5/10s"), lambda: store, clock)
    assert [quota.take("p") for _ in range(5)] == [0.0] * 5
    assert quota.take("p") > 0
    clock.advance(1.0)
    assert quota.take("p") > 0
    assert store.learn("p", REQUESTS, READ, 0.5, 0.0) == pytest.approx(0.5 * (1 + SLOW_START))


def test_a_window_spent_faster_than_its_rate_says_so(store: Store, clock: FakeClock) -> None:
    """8/m: a third call in a quarter of the period runs ahead, by the calls past the rate since the first."""
    keys, shard = store.provider_windows("openai", (REQUESTS,))
    window = UnitBudget(parse_rate("8/m")).window()

    def take(entry: str, watch: bool = True) -> Taken:
        return store.budget_take(keys, shard, [window], [1.0], "openai", entry, watch)

    taken = [take(f"{i:04x}") for i in range(3)]
    assert taken[:2] == [Taken(0.0), Taken(0.0)]
    assert taken[2] == pytest.approx(Taken(0.0, True, 3.0, window.span))  # three ahead, for a span
    later = window.span / 4 + 0.01
    clock.advance(later)  # the three are older than a quarter of the span
    assert take("0004") == Taken(0.0)
    for entry in ("0005", "0006"):
        take(entry)
    # Seven calls, where the rate allowed 8 x a quarter of the span since the first.
    assert take("0007") == pytest.approx(Taken(0.0, True, 7 - 8 * later / window.span, window.span - later))
    assert take("0008", watch=False) == Taken(0.0)  # a budget not shared fairly is not looked at
