"""Which held tasks of a fair queue a worker starts early, and how many at each look."""

from __future__ import annotations

from celery_resilience.load.release import MAX_ROUNDS, Held, Release, to_release


def held(*etas: float, queue: str = "q") -> list[Held]:
    return [Held(eta, queue, lambda: None) for eta in etas]


def test_the_earliest_holds_start_first() -> None:
    """Up to the count, the holds that end first are chosen."""
    chosen = to_release(2, held(5.0, 1.0, 3.0), lambda q: 0, was_free=False)
    assert [h.eta for h in chosen] == [1.0, 3.0]


def test_a_queue_with_work_ready_keeps_its_holds() -> None:
    """A queue that has work ready for the slot is still saturated: its holds stay."""
    items = held(1.0, queue="busy") + held(2.0, queue="idle")
    chosen = to_release(2, items, lambda q: 3 if q == "busy" else 0, was_free=True)
    assert [h.queue for h in chosen] == ["idle"]


def test_an_unknown_depth_needs_a_slot_free_at_two_looks() -> None:
    """Without the queue's depth, a slot free only between two tasks is not idle."""
    assert to_release(1, held(1.0), lambda q: None, was_free=False) == []
    assert len(to_release(1, held(1.0), lambda q: None, was_free=True)) == 1


def test_a_busy_worker_starts_nothing() -> None:
    """No free slot, nothing started, whatever is held."""
    assert Release(2).choose(0, held(1.0, 2.0), lambda q: 0) == []


def test_rounds_double_when_the_worker_ran_dry_and_halve_when_none_began() -> None:
    """Every slot idle at a look doubles the rounds; none of the last ones begun halves them."""
    release = Release(2)
    many = held(*range(100))
    assert len(release.choose(1, many, lambda q: 0)) == 1 + 2  # a free slot and one round
    assert len(release.choose(2, many, lambda q: 0)) == 2 + 4  # ran dry: two rounds
    assert release.choose(-4, many, lambda q: 0) == []  # none of the four begun: back to one
    assert release.rounds == 1
    for _ in range(10):
        release.choose(2, many, lambda q: 0)
    assert release.rounds == MAX_ROUNDS


def test_a_worker_busy_with_work_it_started_early_keeps_a_round_started() -> None:
    """Slots taken by held work it started itself do not stop a worker topping up; other work does."""
    release = Release(2)
    many = held(*range(100))
    assert release.choose(-1, many, lambda q: 0) == []
    assert len(release.choose(-1, many, lambda q: 0, started=3)) == 1
