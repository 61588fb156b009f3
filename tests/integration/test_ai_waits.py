"""AITask: waits that end in the fallback chain instead of going on (an in-process worker
on the memory transport; the behaviour is the task's, not the broker's)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_resilience import AITask, FallbackExhausted, FallbackResult, Resilience
from celery_resilience.monitoring.counters import EXPIRED
from tests.integration.conftest import wait_for

GATE = threading.Event()


def build(quota_hold: float = 0.0, **conf: Any) -> tuple[Celery, Any]:
    app = Celery("waits", broker="memory://localhost/", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        resilience_store_url="memory://",
        resilience_tiers={"only": {"rate": "60/m", "burst": 1, "grace": 0}},
        resilience_breakers={"p": {"failure_threshold": 5.0}},
        resilience_templates={"waits.ask": "template answer to {prompt}"},
        broker_transport_options={"polling_interval": 0.01},
        worker_hijack_root_logger=False,
        **conf,
    )
    Resilience(app)

    @app.task(base=AITask, bind=True, name="waits.ask", breaker="p", fallbacks=["template"], shared=False,
              quota_wait_limit=0.0, quota_hold=quota_hold)  # fmt: skip
    def ask(self: AITask, prompt: str) -> str:
        if prompt == "block":
            GATE.wait(10)
        if prompt == "no database":
            return self.answer_from_fallbacks("the database is saturated")  # type: ignore[no-any-return]
        return f"primary answer to {prompt}"

    return app, ask


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    GATE.clear()
    yield GATE
    GATE.set()


def test_a_request_queued_past_its_deadline_is_answered_by_the_chain(gate: threading.Event) -> None:
    """A request queued past its deadline is answered by its chain, not revoked."""
    app, ask = build(
        resilience_throttle_strategies=[{"strategy": "queue_with_timeout", "seconds": 0.05}],
        resilience_max_throttle_delay=5,
    )
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, loglevel="ERROR"):
        blocker = ask.apply_async(("block",), user_id="u")
        queued = ask.apply_async(("late",), user_id="u")  # over the limit: its slot, then 0.05 s
        published = time.time()
        wait_for(lambda: time.time() > published + 1.5, timeout=5)  # its deadline passes while it waits
        gate.set()
        answer = queued.get(timeout=10, disable_sync_subtasks=False)
        assert blocker.get(timeout=10, disable_sync_subtasks=False) == "primary answer to block"
    assert isinstance(answer, FallbackResult)
    assert (answer.kind, answer.value) == ("template", "template answer to late")
    assert answer.reason == "queued past its deadline"
    store = Resilience.of(app).store
    minute = int(store.now() // 60)  # the count may sit in the minute before this one
    assert sum(store.metrics(m).get(EXPIRED, 0) for m in (minute - 1, minute)) == 1


def test_a_request_that_would_wait_for_the_budget_too_long_is_answered_by_the_chain() -> None:
    """A request that would wait for the budget past quota_wait_limit is answered by its chain."""
    app, ask = build(resilience_providers={"p": {"rate": "1/m"}})
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="ERROR"):
        first = ask.apply_async(("one",), user_id="u").get(timeout=10, disable_sync_subtasks=False)
        second = ask.apply_async(("two",), user_id="v").get(timeout=10, disable_sync_subtasks=False)
    assert first == "primary answer to one"
    assert isinstance(second, FallbackResult)
    assert second.kind == "template" and "budget is spent" in second.reason


def test_a_wait_for_the_budget_within_quota_hold_is_spent_in_the_worker() -> None:
    """With quota_hold, a short wait for the budget is held in the worker and the provider answers."""
    app, ask = build(quota_hold=2.0, resilience_providers={"p": {"rate": "2/s"}})
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, loglevel="ERROR"):
        results = [ask.apply_async((f"q{i}",), user_id=f"u{i}") for i in range(4)]
        answers = [result.get(timeout=10, disable_sync_subtasks=False) for result in results]
    # The same requests without the hold: the third is answered by the chain (the test above).
    assert answers == [f"primary answer to q{i}" for i in range(4)]


def test_a_task_can_hand_its_request_to_the_chain_itself() -> None:
    """answer_from_fallbacks answers under the same id and records nothing against the breaker."""
    app, ask = build()
    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False, loglevel="ERROR"):
        result = ask.apply_async(("no database",), user_id="u")
        answer = result.get(timeout=10, disable_sync_subtasks=False)
    assert isinstance(answer, FallbackResult)
    assert (answer.kind, answer.reason) == ("template", "the database is saturated")
    view = Resilience.of(app).breakers.read("p")
    assert view.weight == 0 and view.state.value == "closed"
    with pytest.raises(FallbackExhausted):  # inline, as a step of another chain: the next step goes on
        ask("no database")
