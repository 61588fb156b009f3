"""Sojourn-time shedding with a real worker: a standing queue behind a slow provider sheds
what waited past its deadline (answered by the chain, or ``Throttled``), a burst sheds
nothing, and ``status`` shows each queue's wait and sheds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celery_resilience import FallbackResult, Throttled
from tests.http_server import ScriptedServer
from tests.integration.conftest import app_with_worker, status_report

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shed(integration_env: dict[str, str]) -> Iterator[tuple[Any, ScriptedServer, dict[str, str]]]:
    """The app, one worker thread, and a provider taking 0.3 s per call."""
    provider = ScriptedServer()
    provider.respond(200, {"answer": "from the provider"}, delay=0.3)
    variables = ("RESILIENCE_TEST_SHED_QUEUE", "RESILIENCE_TEST_SHED_PREFIX")
    try:
        with app_with_worker(integration_env, "tests.integration.shedapp", *variables) as (app, env):
            yield app, provider, env
    finally:
        provider.close()


def test_a_burst_sheds_nothing(shed: Any) -> None:
    """Three requests at once wait less than an interval above the target: all reach the provider."""
    app, provider, _ = shed
    before = provider.requests
    results = [app.ask.delay(f"burst {i}", provider.url) for i in range(3)]
    assert [r.get(timeout=30) for r in results] == [{"answer": "from the provider"}] * 3
    assert provider.requests - before == 3


def test_a_standing_queue_sheds_what_waited_past_its_deadline(shed: Any) -> None:
    """Twelve at once behind a 0.3 s provider: the stale ones are answered by the template at once."""
    app, provider, env = shed
    before = provider.requests
    results = [app.ask.delay(f"question {i}", provider.url) for i in range(12)]
    answers = [r.get(timeout=60) for r in results]
    fresh = [a for a in answers if not isinstance(a, FallbackResult)]
    stale = [a for a in answers if isinstance(a, FallbackResult)]
    assert fresh and stale and len(fresh) + len(stale) == 12
    assert provider.requests - before == len(fresh)  # the shed never reached the provider
    assert {(a.kind, a.source) for a in stale} == {("template", "template")}
    assert all("past the 1s deadline" in a.reason for a in stale)
    assert answers[0] == {"answer": "from the provider"}  # served first, it never waited
    report = status_report(env, "tests.integration.shedapp")
    queue = env["RESILIENCE_TEST_SHED_QUEUE"]
    minutes = (report["this_minute"], report["last_minute"])
    assert sum(m["sheds"].get(queue, 0) for m in minutes) == len(stale)
    assert sum(m["dequeued"].get(queue, 0) for m in minutes) >= 15
    assert any(m["average_sojourn"].get(queue, 0) > 0.2 for m in minutes)


def test_without_a_chain_a_shed_request_fails_at_once_with_throttled(shed: Any) -> None:
    """No chain: the stale requests fail with ``Throttled`` the caller sees, not a provider call."""
    app, provider, _ = shed
    results = [app.ask_alone.delay(f"alone {i}", provider.url) for i in range(12)]
    outcomes = []
    for result in results:
        try:
            outcomes.append(result.get(timeout=60))
        except Throttled as refused:
            assert "deadline" in refused.reason
            outcomes.append("shed")
    assert "shed" in outcomes and outcomes[0] == {"answer": "from the provider"}


def test_chains_are_shed_whole_or_run_whole(shed: Any) -> None:
    """Three-step chains in a standing queue: each runs every step, or fails whole at its first."""
    app, provider, _ = shed
    before = provider.requests
    chains = [
        (app.ask.s(f"chain {i}", provider.url) | app.step.s(provider.url) | app.step.s(provider.url)).delay()
        for i in range(10)
    ]
    whole, shed_whole = 0, 0
    for result in chains:
        try:
            answer = result.get(timeout=90)
        except Throttled as refused:
            assert "deadline" in refused.reason
            shed_whole += 1
            continue
        assert answer["after"]["after"] == {"answer": "from the provider"}  # three provider answers
        whole += 1
    assert whole and shed_whole and whole + shed_whole == 10
    assert provider.requests - before == 3 * whole  # no step ran for a chain that was shed
