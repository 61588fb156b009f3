"""The provider quota guard, on both stores."""

from __future__ import annotations

import pytest

from celery_resilience.quota import PROVIDER_METRICS, ProviderQuota
from celery_resilience.rates import parse_rate
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock


def test_budget_is_spent_then_names_the_wait(store: Store, clock: FakeClock) -> None:
    """10 per minute: ten calls pass, the eleventh waits 6 s, and provider calls are counted apart."""
    quota = ProviderQuota({"openai": parse_rate("10/m")}, lambda: store)
    assert [quota.take("openai") for _ in range(10)] == [0.0] * 10
    assert quota.take("openai") == pytest.approx(6.0)
    clock.advance(6.0)
    assert quota.take("openai") == 0.0
    provider = store.metrics(scope=PROVIDER_METRICS)
    assert provider["admitted@openai"] == 11 and provider["throttled@openai"] == 1
    assert "admitted" not in store.metrics()  # user admission metrics are untouched


def test_a_429_drains_the_budget_for_the_wait_the_provider_named(store: Store, clock: FakeClock) -> None:
    """After a 429 with Retry-After 20, no call is granted for 20 s, whatever was left."""
    quota = ProviderQuota({"openai": parse_rate("10/m")}, lambda: store)
    quota.take("openai")
    quota.drain("openai", 20.0)
    assert quota.take("openai") == pytest.approx(20.0)
    clock.advance(20.0)
    assert quota.take("openai") == 0.0
    assert store.metrics()["provider_429:openai"] == 1


def test_a_429_without_retry_after_drains_the_rest_of_the_period(store: Store) -> None:
    """No Retry-After: the budget is spent for one period."""
    quota = ProviderQuota({"openai": parse_rate("100/m")}, lambda: store)
    quota.drain("openai", None)
    assert quota.take("openai") == pytest.approx(60.0)
