"""A budget of several units on both stores: all or nothing, reconciled, in line with the headers."""

from __future__ import annotations

import pytest

from celery_resilience.monitoring.counters import PROVIDER_SCOPE
from celery_resilience.providers.budget import stretched
from celery_resilience.providers.quota import ProviderQuota
from celery_resilience.providers.settings import read_provider_settings
from celery_resilience.providers.usage import Limit, Usage
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader

# Requests: a burst of 2; tokens: a burst of 100, refilled at 900 a minute (stretched).
PROVIDERS = {"p": {"requests": {"rate": "60/m", "burst": 2}, "tokens": {"rate": "1000/m", "burst": 100}}}
TOKEN_REFILL = 900 / stretched(60)


def quota(store: Store) -> ProviderQuota:
    settings = read_provider_settings(SettingsReader({"resilience_providers": PROVIDERS}))
    return ProviderQuota(settings, lambda: store)


def test_a_call_takes_every_unit_or_none(store: Store) -> None:
    """Refused for tokens, a call spends no request: the next small call still gets one."""
    guard = quota(store)
    first, _ = guard.reserve("p", "t", 40, 50)
    assert first is not None and first.taken == {"requests": 1, "tokens": 90}
    refused, wait = guard.reserve("p", "t", 40, 50)
    assert refused is None and wait == pytest.approx(80 / TOKEN_REFILL)
    assert guard.reserve("p", "t", 2, 3)[0] is not None  # the second request, 5 tokens
    _, wait = guard.reserve("p", "t", 1, 0)
    assert wait == pytest.approx(1 / (58 / stretched(60)))  # out of requests now
    counted = store.metrics(scope=PROVIDER_SCOPE)
    assert counted["admitted@p"] == 2 and counted["throttled@p"] == 2


def test_a_cost_above_the_burst_takes_the_whole_burst(store: Store) -> None:
    """A 500-token call against a burst of 100 is granted once the bucket is full, taking all of it."""
    reservation, wait = quota(store).reserve("p", "t", 400, 100)
    assert wait == 0 and reservation is not None and reservation.taken["tokens"] == 100


def test_settling_gives_back_the_unused_and_charges_the_excess(store: Store) -> None:
    """Reserved 90, used 30: 60 come back; reserved 10, used 70: the bucket owes the difference."""
    guard = quota(store)
    reservation, _ = guard.reserve("p", "t", 40, 50)
    assert reservation is not None
    guard.settle(reservation, Usage(20, 10))
    # 100 - 90 + 60 = 70 left: a call of 70 fits at once.
    big, wait = guard.reserve("p", "t", 60, 10)
    assert wait == 0 and big is not None
    guard.settle(big, Usage(100, 30))  # 60 more than reserved: 0 - 60 = -60 owed
    _, wait = guard.reserve("p", "t", 1, 0)
    assert wait == pytest.approx(61 / TOKEN_REFILL)


def test_a_settled_call_gives_nothing_back_when_it_fails_later(store: Store, clock: FakeClock) -> None:
    """Give-back after settling is a no-op; before settling it frees the tokens, not the request."""
    guard = quota(store)
    settled, _ = guard.reserve("p", "t", 40, 50)
    assert settled is not None
    guard.settle(settled, Usage(40, 50))
    guard.give_back(settled)
    failed, _ = guard.reserve("p", "t", 5, 5)
    assert failed is not None
    guard.give_back(failed)
    # 100 - 90 = 10 tokens left, and no request (both spent): the wait is the request's.
    _, wait = guard.reserve("p", "t", 5, 5)
    assert wait == pytest.approx(1 / (58 / stretched(60)))


def test_the_providers_headers_hold_the_budget_to_what_is_left(store: Store) -> None:
    """Five tokens left by the headers: a call of ten waits; none left, until the reset."""
    guard = quota(store)
    guard.follow("p", {"tokens": Limit(5, 30.0)})
    _, wait = guard.reserve("p", "t", 10, 0)
    assert wait == pytest.approx(5 / TOKEN_REFILL)
    guard.follow("p", {"tokens": Limit(0, 30.0), "requests": Limit(500, 1.0)})
    _, wait = guard.reserve("p", "t", 1, 0)
    assert wait == pytest.approx(30.0)


def test_headers_that_leave_more_than_the_burst_change_nothing(store: Store) -> None:
    """Plenty left by the provider: the bucket, never above its burst, stays as it was."""
    guard = quota(store)
    guard.follow("p", {"tokens": Limit(150_000, 60.0), "requests": Limit(499, 0.1)})
    reservation, wait = guard.reserve("p", "t", 50, 50)
    assert wait == 0 and reservation is not None
