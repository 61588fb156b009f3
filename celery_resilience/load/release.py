"""Work a fair queue held back, run early by a worker that would otherwise idle: pure.

A fair queue ordered by delay fixes each hold at the publish, at the tenant's share while
others were present (``load/fairness.py``). When those others stop sending, the held work
keeps its spacing and the workers idle until each hold ends: the queue drains at the
flooding tenant's old share instead of at the workers' rate. A worker therefore runs held
work before its time once it has a free slot and the queue has nothing ready: then no
other tenant's work is waiting for that slot, and starting the earliest held task is what
generalized processor sharing would do. While the queue is
saturated the workers have no free slot, or the queue has work ready for it, so the fair
order is kept. Besides its free slots, a worker starts a few rounds of its slots more, so
that tasks shorter than the interval between its looks do not leave it idle in between:
twice as many when the last ran out before the next look, half as many when they had not.

Celery's worker holds a task with an ETA on its timer; the bootstep
(``bootsteps.FairRelease``) finds the held tasks of this worker's fair queues and asks
this module which of them to start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Held", "Release", "RELEASE_INTERVAL", "to_release"]

# How often a worker looks for a free slot and held work (seconds).
RELEASE_INTERVAL = 0.1
# The most rounds of its slots a worker starts beyond its free ones at one look.
MAX_ROUNDS = 8


class Held(NamedTuple):
    eta: float
    """When the hold ends (a timestamp)."""
    queue: str
    release: Callable[[], None]
    """Starts the task now, in place of the timer (the hold's timer entry is cancelled)."""


@dataclass(slots=True)
class Release:
    """One worker's looks: how many held tasks to start at each."""

    slots: int
    rounds: int = 1
    free_before: bool = False
    started_before: bool = False

    def choose(self, free: int, held: Iterable[Held], ready: Callable[[str], int | None]) -> list[Held]:
        """The held tasks to start now, with ``free`` of the worker's slots free."""
        was_free, self.free_before = self.free_before, free > 0
        started, self.started_before = self.started_before, False
        if free <= 0:
            if started:  # what was started last still runs: fewer next time
                self.rounds = max(1, self.rounds // 2)
            return []
        if started and free >= self.slots:  # what was started last ran out before this look
            self.rounds = min(MAX_ROUNDS, self.rounds * 2)
        chosen = to_release(free + self.rounds * self.slots, held, ready, was_free)
        self.started_before = bool(chosen)
        return chosen


def to_release(
    count: int, held: Iterable[Held], ready: Callable[[str], int | None], was_free: bool
) -> list[Held]:
    """Up to ``count`` held tasks to start now, earliest first, of queues that have nothing
    ready (``ready``: the queue's ready messages, None when not known; then the worker must
    have had a free slot at the last look too, ``was_free``: a slot free only between two
    tasks is not idle)."""
    if count <= 0:
        return []
    idle: dict[str, bool] = {}
    chosen: list[Held] = []
    for item in sorted(held, key=lambda h: h.eta):
        if item.queue not in idle:
            depth = ready(item.queue)
            idle[item.queue] = depth == 0 if depth is not None else was_free
        if not idle[item.queue]:
            continue
        chosen.append(item)
        if len(chosen) == count:
            break
    return chosen
