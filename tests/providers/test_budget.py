"""The provider budget in requests, on both stores."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_resilience.monitoring.counters import PROVIDER_SCOPE
from celery_resilience.providers.budget import REQUESTS, ProviderBudget, UnitBudget, stretched
from celery_resilience.providers.quota import ProviderQuota
from celery_resilience.providers.settings import ProviderSettings
from celery_resilience.rates import Rate, parse_rate
from celery_resilience.store import MemoryStore, Store
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock


def budget(rate: str, burst: int, name: str = "openai") -> ProviderSettings:
    return requests_budget(parse_rate(rate), burst, name)


def requests_budget(rate: Rate, burst: int, name: str) -> ProviderSettings:
    return ProviderSettings({name: ProviderBudget(((REQUESTS, UnitBudget(rate, burst)),))}, None, None)


def most_in_any_window(moments: list[float], window: float) -> int:
    """The largest number of ``moments`` inside one closed window of that length."""
    return max(bisect.bisect_right(moments, start + window) - index for index, start in enumerate(moments))


def test_budget_is_spent_then_names_the_wait(store: Store, clock: FakeClock) -> None:
    """10/m with a burst of 2: two calls at once, then the refill's wait, counted apart from users."""
    quota = ProviderQuota(budget("10/m", 2), lambda: store)
    assert [quota.take("openai") for _ in range(2)] == [0.0, 0.0]
    refill = 8 / stretched(60)
    assert quota.take("openai") == pytest.approx(1 / refill)
    clock.advance(1 / refill)
    assert quota.take("openai") == 0.0
    provider = store.metrics(scope=PROVIDER_SCOPE)
    assert provider["admitted@openai"] == 3 and provider["throttled@openai"] == 1
    assert "admitted" not in store.metrics()  # user admission metrics are untouched


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(min_value=1, max_value=150),
    period=st.sampled_from([1.0, 3.0, 60.0, 3600.0]),
    burst_share=st.floats(min_value=0.0, max_value=1.0),
)
def test_no_window_of_the_period_sees_more_than_the_count(
    count: int, period: float, burst_share: float
) -> None:
    """Taking the budget as fast as it allows, no window of one period ever holds more than the count."""
    clock = FakeClock()
    burst = max(1, min(count - 1, round(burst_share * count))) if count > 1 else 1
    quota = ProviderQuota(requests_budget(Rate(count, period), burst, "p"), lambda: store)
    store = MemoryStore(KeySpace("q", 1), clock=clock)
    start, calls = clock(), []
    while clock() - start < 4 * period:
        wait = quota.take("p")
        if wait <= 0:
            calls.append(clock() - start)
        else:
            clock.advance(wait + 1e-6)  # past float rounding at epoch-sized times
    assert most_in_any_window(calls, period) <= count
    # ...and the budget is used: the burst, then the rest at the (stretched) period's pace
    assert len(calls) >= min(4 * count, burst + int(3 * period / stretched(period) * (count - burst)))


def test_a_429_drains_the_budget_for_the_wait_the_provider_named(store: Store, clock: FakeClock) -> None:
    """After a 429 with Retry-After 20, no call is granted for 20 s, whatever was left."""
    quota = ProviderQuota(budget("10/m", 5), lambda: store)
    quota.take("openai")
    quota.drain("openai", 20.0)
    assert quota.take("openai") == pytest.approx(20.0)
    clock.advance(20.0)
    assert quota.take("openai") == 0.0
    assert store.metrics()["provider_429:openai"] == 1


def test_a_429_without_retry_after_drains_the_rest_of_the_period(store: Store) -> None:
    """No Retry-After: the budget is spent for one period."""
    quota = ProviderQuota(budget("100/m", 10), lambda: store)
    quota.drain("openai", None)
    assert quota.take("openai") == pytest.approx(60.0)
