"""The learned budget's arithmetic (AIMD and stated limits), in the pure core and both stores."""

from __future__ import annotations

import pytest

from celery_resilience.errors import ConfigurationError
from celery_resilience.providers.budget import stretched
from celery_resilience.providers.learned import (
    COOL_DOWN,
    CUT,
    DECREASE,
    GROW,
    INCREASE,
    PROBE,
    PROBE_TOP,
    QUIET,
    READ,
    SET,
    SLOW_START,
    learned,
)
from celery_resilience.providers.quota import ProviderQuota
from celery_resilience.providers.settings import read_provider_settings
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader


def test_a_429_cuts_once_per_cool_down() -> None:
    """Two 429s within the cool-down cut once; the rate at the cut is remembered as the ceiling."""
    state = learned(None, CUT, 100.0, start=10.0)
    assert state.rate == pytest.approx(10.0 * DECREASE) and state.ceiling == 10.0
    assert learned(state, CUT, 100.0 + COOL_DOWN / 2, start=10.0) == state
    assert learned(state, CUT, 100.0 + COOL_DOWN, start=10.0).rate == pytest.approx(10.0 * DECREASE**2)


def test_success_grows_back_to_the_last_cut_then_probes_past_it() -> None:
    """Quiet just after a cut; then INCREASE of the cut's rate per second up to it, then CUBIC's curve."""
    state = learned(None, CUT, 100.0, start=10.0)
    assert learned(state, GROW, 100.0 + QUIET / 2, start=10.0).rate == state.rate  # held by the drain
    grown = learned(state, GROW, 100.0 + QUIET + 5.0, start=10.0)  # a long gap counts as one second
    assert grown.rate == pytest.approx(state.rate + INCREASE * 10.0)
    back = grown
    for step in range(1, 4):  # 8.5 -> 9.0 -> 9.5 -> 10.0, and not past it by adding
        back = learned(back, GROW, grown.grown_at + step * 1.5, start=10.0)
    assert back.rate == pytest.approx(10.0)
    # Past it, the rate at the cut times 1 + PROBE * (seconds probing)^3: flat, then steep.
    probed = learned(back, GROW, back.grown_at + 1.0, start=10.0)
    assert probed.rate == pytest.approx(10.0 * (1 + PROBE))
    probed = learned(probed, GROW, probed.grown_at + 1.0, start=10.0)
    assert probed.rate == pytest.approx(10.0 * (1 + PROBE * 8))
    for _ in range(20):  # ...and no faster than PROBE_TOP of itself a second
        faster = learned(probed, GROW, probed.grown_at + 1.0, start=10.0)
        assert faster.rate <= probed.rate * (1 + PROBE_TOP) * (1 + 1e-9)
        probed = faster
    assert probed.rate > 10.0 * 4


def test_a_unit_never_cut_grows_by_slow_start() -> None:
    """With no cut yet (a cut time of zero), the rate grows by SLOW_START of itself a second."""
    state = learned(None, READ, 1_800_000_000.0, start=10.0)
    grown = learned(state, GROW, state.grown_at + 1.0, start=10.0)
    assert grown.rate == pytest.approx(10.0 * (1 + SLOW_START))


def test_a_cut_goes_to_what_the_window_held_when_the_provider_refused() -> None:
    """Refused at a window of 9.5 a second, a rate of 10 is cut to 9.5 (not 8) and probes from there."""
    cut = learned(None, CUT, 100.0, start=10.0, accepted=9.5)
    assert cut.rate == 9.5 and cut.ceiling == 9.5
    assert learned(None, CUT, 100.0, start=10.0, accepted=12.0).rate == pytest.approx(10.0 * DECREASE)
    # Within the cool-down a 429 says nothing new, unless its window held less than the rate.
    assert learned(cut, CUT, 100.1, start=10.0, accepted=6.0, held=9.8).rate == 9.5
    assert learned(cut, CUT, 100.1, start=10.0, accepted=6.0, held=6.0).rate == 6.0


def test_a_429_met_while_probing_cuts_to_what_the_window_held() -> None:
    """Probing past its last cut, a rate refused where the window held 10.02 is cut to that, not lower."""
    cut = learned(None, CUT, 100.0, start=12.0, accepted=10.0)
    probing = learned(cut, GROW, 100.0 + QUIET + 1.0, start=12.0)
    probing = learned(probing, GROW, probing.grown_at + 1.0, start=12.0)
    assert probing.rate > probing.ceiling
    found = learned(probing, CUT, probing.grown_at + 0.1, start=12.0, accepted=9.0, held=10.02)
    assert found.rate == 10.02 and found.ceiling == 10.02
    # Not probing (the limit fell under a rate that held): the projection, as before.
    assert learned(cut, CUT, 110.0, start=12.0, accepted=7.0, held=9.9).rate == 7.0
    # In the same episode, only a window that held less lowers it.
    assert learned(found, CUT, found.cut_at + 0.1, start=12.0, accepted=8.0, held=10.1) == found
    assert learned(found, CUT, found.cut_at + 0.1, start=12.0, accepted=8.0, held=9.5).rate == 9.5


def test_a_stated_limit_is_taken_as_it_is() -> None:
    """The provider's own limit header replaces whatever was learned, and neither 429s nor growth move it."""
    state = learned(learned(None, CUT, 100.0, start=10.0), SET, 101.0, start=10.0, value=42.0)
    assert state.rate == 42.0 and state.ceiling == 42.0
    assert learned(state, CUT, 110.0, start=10.0, accepted=30.0).rate == 42.0
    assert learned(state, GROW, 120.0, start=10.0).rate == 42.0
    assert learned(state, SET, 121.0, start=10.0, value=21.0).rate == 21.0


def test_a_store_cuts_to_what_the_window_held_the_same_way(store: Store, clock: FakeClock) -> None:
    """Redis's script and the memory store agree on cuts by what the window held, and on probing."""
    assert store.learn("p", "tokens", CUT, 10.0, 1.0, 9.5) == 9.5
    assert store.learn("p", "tokens", CUT, 10.0, 1.0, 9.8, 9.8) == 9.5  # the same episode
    assert store.learn("p", "tokens", CUT, 10.0, 1.0, 6.0, 6.0) == 6.0  # ...that met a lower window
    clock.advance(1.0 + QUIET)  # the drain and the quiet: a gap counts as one second
    assert store.learn("p", "tokens", GROW, 10.0, 0.0) == pytest.approx(6.0 * (1 + PROBE))
    clock.advance(1.0)
    assert store.learn("p", "tokens", GROW, 10.0, 0.0) == pytest.approx(6.0 * (1 + PROBE * 8))


def test_a_store_learns_the_same_way(store: Store, clock: FakeClock) -> None:
    """Redis's script and the memory store agree step by step, and a read changes nothing."""
    assert store.learn("p", "tokens", READ, 10.0, 0.0) == 10.0
    assert store.learn("p", "tokens", CUT, 10.0, 0.0) == pytest.approx(10.0 * DECREASE)
    assert store.learn("p", "tokens", CUT, 10.0, 0.0) == pytest.approx(10.0 * DECREASE)  # cooling down
    clock.advance(QUIET / 2)
    assert store.learn("p", "tokens", GROW, 10.0, 0.0) == pytest.approx(10.0 * DECREASE)  # quiet
    clock.advance(QUIET)
    assert store.learn("p", "tokens", GROW, 10.0, 0.0) == pytest.approx(10.0 * DECREASE + INCREASE * 10.0)
    assert store.learn("p", "requests", READ, 3.0, 0.0) == 3.0  # units apart
    assert store.learn("p", "tokens", SET, 10.0, 25.0) == 25.0
    assert store.learn("p", "tokens", READ, 10.0, 0.0) == 25.0
    clock.advance(COOL_DOWN + QUIET + 1.0)
    assert store.learn("p", "tokens", CUT, 10.0, 1.0, 20.0) == 25.0  # a stated rate holds
    assert store.learn("p", "tokens", GROW, 10.0, 0.0) == 25.0
    assert store.learn("p", "tokens", SET, 10.0, 12.5) == 12.5  # until the provider says otherwise


def test_a_learned_unit_holds_its_learned_count(store: Store, clock: FakeClock) -> None:
    """Cut by a 429, the unit's window holds the lower count for every process sharing the store."""
    conf = {"resilience_providers": {"p": {"requests": {"learn": "60/m"}}}}
    settings = read_provider_settings(SettingsReader(conf))
    quota = ProviderQuota(settings, lambda: store, clock)
    other = ProviderQuota(settings, lambda: store, clock)
    quota.drain("p", 0.001)  # a 429 with nothing in the window: cut to 48/m
    clock.advance(0.002)
    assert all(other.reserve("p")[0] is not None for _ in range(48))
    assert other.reserve("p")[1] == pytest.approx(stretched(60), abs=0.01)


def test_learn_takes_a_starting_rate_alone() -> None:
    """A learned unit names its starting guess and nothing else."""
    with pytest.raises(ConfigurationError, match=r"resilience_providers\['p'\]\['tokens'\]"):
        read_provider_settings(
            SettingsReader({"resilience_providers": {"p": {"tokens": {"learn": "1/m", "burst": 1}}}})
        )
