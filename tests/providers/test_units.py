"""A budget of several units on both stores: all or nothing, settled, in line with the headers."""

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

PROVIDERS = {"p": {"requests": "3/m", "tokens": "100/m"}}
SPAN = stretched(60)


def quota(store: Store) -> ProviderQuota:
    settings = read_provider_settings(SettingsReader({"resilience_providers": PROVIDERS}))
    return ProviderQuota(settings, lambda: store)


def test_a_call_takes_every_unit_or_none(store: Store, clock: FakeClock) -> None:
    """Refused for tokens, a call spends no request: the next small call still gets one."""
    guard = quota(store)
    first, _ = guard.reserve("p", "t", 40, 50)
    assert first is not None and first.taken == {"requests": 1, "tokens": 90}
    clock.advance(5)
    refused, wait = guard.reserve("p", "t", 40, 50)
    assert refused is None and wait == pytest.approx(SPAN - 5)  # when the first call leaves
    assert guard.reserve("p", "t", 2, 3)[0] is not None  # the second request, 5 tokens
    assert guard.reserve("p", "t", 2, 3)[0] is not None  # the third
    _, wait = guard.reserve("p", "t", 1, 0)
    assert wait == pytest.approx(SPAN - 5)  # out of requests now
    counted = store.metrics(scope=PROVIDER_SCOPE)
    assert counted["admitted@p"] == 3 and counted["throttled@p"] == 2


def test_a_cost_above_the_count_takes_the_whole_count(store: Store) -> None:
    """A 500-token call against a count of 100 is granted in an empty window, taking all of it."""
    reservation, wait = quota(store).reserve("p", "t", 400, 100)
    assert wait == 0 and reservation is not None and reservation.taken["tokens"] == 100


def test_settling_counts_what_the_provider_counted(store: Store, clock: FakeClock) -> None:
    """Reserved 90, used 30: 70 more fit at once; one reserved 70 settled at 90: 120 held until both leave."""
    guard = quota(store)
    reservation, _ = guard.reserve("p", "t", 40, 50)
    assert reservation is not None
    guard.settle(reservation, Usage(20, 10))
    big, wait = guard.reserve("p", "t", 60, 10)
    assert wait == 0 and big is not None
    clock.advance(10)
    guard.settle(big, Usage(60, 30))  # 20 more than reserved: 30 + 90 = 120 in the window
    _, wait = guard.reserve("p", "t", 1, 0)
    assert wait == pytest.approx(SPAN - 10)  # both must leave: they were reserved at once


def test_a_settled_call_gives_nothing_back_when_it_fails_later(store: Store) -> None:
    """Give-back after settling is a no-op; before settling it frees the tokens, not the request."""
    guard = quota(store)
    settled, _ = guard.reserve("p", "t", 40, 50)
    assert settled is not None
    guard.settle(settled, Usage(40, 50))
    guard.give_back(settled)
    failed, _ = guard.reserve("p", "t", 5, 5)
    assert failed is not None
    guard.give_back(failed)
    assert guard.reserve("p", "t", 5, 5)[0] is not None  # its tokens came back: 100 in all
    _, wait = guard.reserve("p", "t", 1, 0)
    assert wait == pytest.approx(SPAN)  # three requests spent


def test_the_providers_headers_hold_the_budget_to_what_is_left(store: Store) -> None:
    """Five tokens left by the headers: a call of ten waits for their reset; none left, the same."""
    guard = quota(store)
    guard.follow("p", {"tokens": Limit(5, 30.0)})
    _, wait = guard.reserve("p", "t", 10, 0)
    assert wait == pytest.approx(30.0)
    assert guard.reserve("p", "t", 5, 0)[0] is not None
    guard.follow("p", {"tokens": Limit(0, 40.0), "requests": Limit(500, 1.0)})
    _, wait = guard.reserve("p", "t", 1, 0)
    assert wait == pytest.approx(40.0)


def test_headers_that_leave_more_than_the_window_change_nothing(store: Store) -> None:
    """Plenty left by the provider: the window keeps its own count."""
    guard = quota(store)
    guard.follow("p", {"tokens": Limit(150_000, 60.0), "requests": Limit(499, 0.1)})
    reservation, wait = guard.reserve("p", "t", 50, 50)
    assert wait == 0 and reservation is not None


def test_a_refused_call_keeps_the_window_in_step_with_what_left_it(store: Store, clock: FakeClock) -> None:
    """A call refused just after an older one left still sees the window without it."""
    guard = quota(store)
    assert guard.reserve("p", "t", 40, 0)[0] is not None
    clock.advance(1)
    assert guard.reserve("p", "t", 40, 0)[0] is not None
    clock.advance(SPAN - 0.5)  # the first has left, the second has not
    assert guard.reserve("p", "t", 70, 0)[0] is None
    assert guard.reserve("p", "t", 60, 0)[0] is not None
