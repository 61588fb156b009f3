"""Work a fair queue held back, run early by a worker that would otherwise idle: pure.

A fair queue ordered by delay fixes each hold at the publish, at the tenant's share while
others were present (``load/fairness.py``). When those others stop sending, the held work
keeps its spacing and the workers idle until each hold ends: the queue drains at the
flooding tenant's old share instead of at the workers' rate. A worker therefore runs held
work before its time once it has a free slot and the queue has nothing ready: then no
other tenant's work is waiting for that slot, and starting the earliest held task is what
generalized processor sharing would do. While the queue is
saturated the workers have no free slot, or the queue has work ready for it, so the fair
order is kept. While the slots are taken by held work it started itself, a worker keeps
a few rounds of its slots more started, so that it does not idle between its looks:
twice as many after a look that finds every slot idle, half as many after one that finds
none of the last ones begun.

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
    request: object = None
    """The worker's request, by which it knows the tasks it started early."""


@dataclass(slots=True)
class Release:
    """One worker's looks: how many held tasks to start at each."""

    slots: int
    rounds: int = 1
    free_before: bool = False

    def choose(
        self, free: int, held: Iterable[Held], ready: Callable[[str], int | None], started: int = 0
    ) -> list[Held]:
        """The held tasks to start now, with ``free`` of the worker's slots free (less than
        zero: tasks wait for a slot in the worker), ``started`` of the tasks it has not
        finished being ones this worker started early."""
        was_free, self.free_before = self.free_before, free > 0
        if free >= self.slots:  # every slot idle: what was started ran out before this look
            self.rounds = min(MAX_ROUNDS, self.rounds * 2)
        elif free <= -self.rounds * self.slots:  # nothing started last time has begun yet
            self.rounds = max(1, self.rounds // 2)
        if free + started <= 0:  # every slot taken by work of the worker's own choosing
            return []
        return to_release(free + self.rounds * self.slots, held, ready, was_free or started > 0)


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
