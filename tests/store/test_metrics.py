"""Cluster-wide metrics read back from the store, on both stores."""

from __future__ import annotations

import pytest

from celery_resilience.metrics import MetricsReader, pearson
from celery_resilience.quota import ProviderQuota
from celery_resilience.rates import parse_rate
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock


def test_pearson_matches_a_hand_computation() -> None:
    """x = 1..5, y = 2, 4, 5, 4, 5: deviations -2..2 and -2, 0, 1, 0, 1, so
    r = 6 / sqrt(10 * 6) = 0.7746 (worked by hand)."""
    assert pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]) == pytest.approx(6 / (10 * 6) ** 0.5)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([1, 2], [1, 2]) is None


def test_the_minute_summary_names_every_figure(store: Store, clock: FakeClock) -> None:
    """Admission, strategies, delays, tiers, grace, fallbacks, breakers and providers, per minute."""
    store.count(
        {
            "admitted@free": 6,
            "graced@free": 2,
            "throttled@enterprise": 4,
            "throttled:delay": 3,
            "throttled:reject_with_backoff": 1,
            "delay_total": 7.5,
            "fallback:template": 2,
            "fallback:cached_similar": 1,
            "breaker_trip:openai": 1,
            "provider_429:openai": 3,
            "expired": 1,
            "ungated": 5,
        }
    )
    ProviderQuota({"openai": parse_rate("100/m")}, lambda: store).take("openai")
    reader = MetricsReader(store)
    summary = reader.minute(reader.current_minute())
    assert (summary.requests, summary.admitted, summary.graced, summary.throttled) == (12, 6, 2, 4)
    assert summary.throttled_by_strategy == {"delay": 3, "reject_with_backoff": 1}
    assert summary.average_delay == pytest.approx(2.5)
    assert summary.tiers == {"free": 8, "enterprise": 4}
    assert summary.grace_share == pytest.approx(0.25)
    assert summary.fallbacks == {"template": 2, "cached_similar": 1}
    assert summary.breaker_trips == {"openai": 1}
    assert summary.provider_calls == {"openai": 1} and summary.provider_429s == {"openai": 3}
    assert (summary.expired, summary.ungated) == (1, 5)


def test_load_correlation_over_the_recorded_minutes(store: Store, clock: FakeClock) -> None:
    """Throttling that follows load correlates; the figure is the hand-computed Pearson r."""
    reader = MetricsReader(store)
    throttled, load = [1, 2, 3, 4, 5], [0.2, 0.4, 0.5, 0.4, 0.5]
    for t, usage in zip(throttled, load, strict=True):
        store.count({"throttled@free": t})
        store.record_load(reader.current_minute(), usage)
        clock.advance(60)
    assert reader.load_correlation(minutes=5) == pytest.approx(6 / (10 * 6) ** 0.5)
    assert [s.throttled for s in reader.last(5)] == throttled
