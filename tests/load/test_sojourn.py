"""CoDel's rule at dequeue: a standing queue sheds only what waited past its deadline."""

from __future__ import annotations

import pytest

from celery_resilience import ConfigurationError
from celery_resilience.load.sojourn import DEFAULT_SHEDDING, SojournPolicy, SojournWatch, read_shedding

POLICY = {"interactive": SojournPolicy(target=1.0, interval=4.0, deadline=10.0), "default": None}


def test_a_burst_shorter_than_the_interval_never_sheds() -> None:
    """Waits above the target for less than an interval shed nothing, however long they are."""
    watch = SojournWatch(POLICY)
    assert not watch.shed("q", "interactive", 0.5, now=100.0)
    assert [watch.shed("q", "interactive", 30.0, now=100.0 + t) for t in (1, 2, 3, 3.9)] == [False] * 4


def test_a_standing_queue_sheds_what_waited_past_the_deadline() -> None:
    """After an interval of waits above the target, those past the deadline shed, the rest run."""
    watch = SojournWatch(POLICY)
    seen = [
        watch.shed("q", "interactive", wait, now=100.0 + t) for t, wait in enumerate((2, 3, 5, 8, 9, 12, 3))
    ]
    assert seen == [False, False, False, False, False, True, False]
    assert watch.overloaded("q", "interactive", 106.0)
    assert not watch.shed("q", "interactive", 0.2, now=107.0)  # one fresh request ends the episode
    assert not watch.overloaded("q", "interactive", 107.0)


def test_a_queue_overloaded_lately_sheds_again_without_waiting_an_interval() -> None:
    """Within 16 intervals of an episode's end, a wait past the target is overload at once (RFC 8289)."""
    watch = SojournWatch(POLICY)
    for t, wait in enumerate((2, 3, 5, 8, 9, 12)):
        watch.shed("q", "interactive", wait, now=100.0 + t)
    assert not watch.shed("q", "interactive", 0.2, now=106.0)  # the episode ends
    assert watch.shed("q", "interactive", 12.0, now=107.0)  # and the next starts at once
    assert not watch.shed("q", "interactive", 0.2, now=108.0)
    for t in range(1, 25):  # a queue kept fresh: the episode's end is long past
        watch.shed("q", "interactive", 0.2, now=108.0 + 3 * t)
    assert not watch.shed("q", "interactive", 12.0, now=181.0)  # a whole interval again


def test_a_quiet_spell_starts_a_new_episode() -> None:
    """Two stale requests an hour apart are not a standing queue."""
    watch = SojournWatch(POLICY)
    for t in range(6):
        watch.shed("q", "interactive", 2.0, now=100.0 + t)
    assert not watch.shed("q", "interactive", 20.0, now=4000.0)


def test_queues_and_request_types_are_watched_apart_and_none_is_never_shed() -> None:
    """One queue's standing wait sheds nothing elsewhere; a type set to None is never shed."""
    watch = SojournWatch(POLICY)
    for t in range(6):
        watch.shed("q", "interactive", 11.0, now=100.0 + t)
    assert watch.shed("q", "interactive", 11.0, now=106.0)
    assert not watch.shed("other", "interactive", 11.0, now=106.0)
    assert not any(watch.shed("q", "mine", 99.0, now=100.0 + t) for t in range(10))


def test_settings_merge_over_the_defaults_and_refuse_what_cannot_work() -> None:
    """Numbers merge per request type; None turns one off; a deadline under the target fails."""
    conf = {
        "interactive": {"deadline": 30},
        "batch": {"target": 60, "deadline": 120},
        "critical_business": None,
    }
    read = read_shedding("resilience_shedding", conf)
    assert read["interactive"] == SojournPolicy(target=5.0, interval=5.0, deadline=30.0)
    assert read["batch"] == SojournPolicy(target=60.0, interval=5.0, deadline=120.0)
    assert (
        read["critical_business"] is None
        and read["background"] is None
        and DEFAULT_SHEDDING["default"] is None
    )
    for bad in ({"interactive": {"deadline": 1}}, {"interactive": {"target": -1}}, {"x": {"speed": 1}}, [1]):
        with pytest.raises(ConfigurationError, match="resilience_shedding"):
            read_shedding("resilience_shedding", bad)


def test_the_deadline_is_held_against_the_users_wait_pacing_included() -> None:
    """In a standing queue a request paced long before it queued is past its deadline all the same."""
    watch = SojournWatch(POLICY)
    for t in range(5):
        watch.shed("q", "interactive", 2.0, now=100.0 + t)
    assert not watch.shed("q", "interactive", 2.0, now=105.0, age=9.0)
    assert watch.shed("q", "interactive", 2.0, now=106.0, age=11.0)
