"""A request is held to its deadline with its own run, and a chain's later steps, foreseen."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from celery import Celery

from celery_resilience import Resilience
from celery_resilience.shedding import shed_reason
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock


def dequeued(resilience: Resilience, waited: float, later_steps: int) -> Any:
    """A first step that waited ``waited`` seconds in queue ``q``, with ``later_steps`` after it."""
    request = SimpleNamespace(eta=None, delivery_info={"routing_key": "q"}, parent_id=None,
                              chain=[{"task": "next"}] * later_steps)  # fmt: skip
    task = SimpleNamespace(request=request, queue="q", request_type="interactive", name="ask")
    context = {"at": resilience.clock.now() - waited, "request_type": "interactive"}
    return shed_reason(task, resilience, context)


def standing_queue() -> Resilience:
    """A queue whose requests waited above the 0.2 s target for its 1 s interval (deadline 1 s)."""
    clock = FakeClock()
    app = Celery("shed", broker="memory://localhost/", set_as_current=False)
    app.conf.resilience_shedding = {"interactive": {"target": 0.2, "interval": 1.0, "deadline": 1.0}}
    resilience = Resilience(app, store=MemoryStore(KeySpace("shed", 1), clock=clock), clock=clock)
    for _ in range(3):
        assert dequeued(resilience, 0.5, 0) is None
        clock.advance(0.5)
    return resilience


def test_a_chain_starts_only_when_its_later_steps_can_still_end_in_time() -> None:
    """Waited 0.6 s against a 1 s deadline: a lone request runs, one with two more steps to wait is shed."""
    resilience = standing_queue()
    assert dequeued(resilience, 0.6, 0) is None
    reason = dequeued(resilience, 0.6, 2)
    assert reason is not None and "2 more steps" in reason


def test_a_request_whose_run_would_end_past_the_deadline_is_shed() -> None:
    """Waited 0.6 s against a 1 s deadline: shed once its runs are seen to take 0.5 s."""
    resilience = standing_queue()
    assert dequeued(resilience, 0.6, 0) is None
    resilience.sojourn.ran("ask", 0.5)
    reason = dequeued(resilience, 0.6, 0)
    assert reason is not None and "0.5s more foreseen" in reason
