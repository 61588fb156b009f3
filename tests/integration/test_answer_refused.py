"""At critical load, a refused interactive call of an AI task with a chain is answered at
once from the chain's steps that call no provider, under its task id, and nothing is
published; where no such answer exists, or the call is sheddable, the refusal stands."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.result import AsyncResult

from celery_resilience import FallbackResult, Resilience, Throttled
from celery_resilience.load.queue_depth import QueueDepths
from tests.http_server import ScriptedServer
from tests.integration.conftest import status_report, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(integration_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """This module's queue and key prefix, for the app imported here and the status command."""
    run = uuid.uuid4().hex[:8]
    names = {
        "RESILIENCE_TEST_ANSWER_QUEUE": f"crtest-answer-{run}",
        "RESILIENCE_TEST_ANSWER_PREFIX": f"crtest-answer-{run}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in names.items():
            patch.setenv(name, value)
        yield {**integration_env, **names}


@pytest.fixture(scope="module")
def app(env: dict[str, str]) -> Iterator[Any]:
    """The app, its queue past the critical depth (three messages nobody consumes)."""
    from tests.integration import answerapp

    queue = env["RESILIENCE_TEST_ANSWER_QUEUE"]
    for _ in range(3):
        answerapp.app.send_task("filler", queue=queue)
    wait_for(lambda: Resilience.of(answerapp.app).load.severity(queue).value == "critical", timeout=10)
    yield answerapp
    with answerapp.app.connection_for_write() as connection:
        channel: Any = connection.default_channel
        channel.queue_delete(queue)
        channel.queue_delete(f"{queue}-quiet")
    Resilience.of(answerapp.app).store.purge()


@pytest.fixture
def provider() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.respond(200, {"answer": "from a provider"})
    yield server
    server.close()


def depth(app: Any, queue: str | None = None) -> int:
    depths = QueueDepths(app.app, interval=0)
    try:
        return int(depths.depth(queue or app.QUEUE) or 0)
    finally:
        depths.close()


def test_a_refused_call_is_answered_by_rules_or_template_under_its_id(
    app: Any, provider: ScriptedServer
) -> None:
    """Over the limit at critical load: rule-based or template answers, in the backend, nothing published."""
    user = f"u-{uuid.uuid4().hex[:6]}"
    first = app.ask.apply_async(("invoice 1", provider.url), user_id=user)  # the user's one token
    assert depth(app) == 4
    by_rules = app.ask.apply_async(("invoice 2", provider.url), user_id=user)
    by_template = app.ask.apply_async(("hello", provider.url), user_id=user, task_id="chosen-id")
    assert depth(app) == 4 and provider.requests == 0
    rule_answer: Any = AsyncResult(by_rules.id, app=app.app).get(timeout=10)
    assert isinstance(rule_answer, FallbackResult) and rule_answer.value == {"label": "billing"}
    assert (rule_answer.kind, rule_answer.source) == ("rule_based", "answer.rules")
    assert "exceeded" in rule_answer.reason
    assert [a["step"] for a in rule_answer.attempts] == ["answer.ask_secondary"]  # a provider: skipped
    template: Any = AsyncResult("chosen-id", app=app.app).get(timeout=10)
    assert by_template.id == "chosen-id" and by_template.get() == template
    assert (template.kind, template.value) == ("template", "We are busy; your question 'hello' is noted.")
    assert first.id not in (by_rules.id, by_template.id)


def test_the_refusal_stands_where_no_cheap_answer_exists(app: Any, provider: ScriptedServer) -> None:
    """No chain, cheap steps with nothing, a call feeding a canvas, sheddable work: ``Throttled``."""
    user = f"u-{uuid.uuid4().hex[:6]}"
    app.ask.apply_async(("invoice 1", provider.url), user_id=user)
    before = depth(app)
    calls: dict[str, Callable[[], Any]] = {
        "no chain": lambda: app.plain.apply_async(("hello", provider.url), user_id=user),
        "nothing cheap": lambda: app.ask_rules_only.apply_async(("hello", provider.url), user_id=user),
        "a link": lambda: app.ask.apply_async(("invoice 3", provider.url), user_id=user, link=app.plain.s()),
        "sheddable": lambda: app.batch.apply_async(("invoice 4", provider.url), user_id=user),
    }
    for why, call in calls.items():
        with pytest.raises(Throttled) as refused:
            call()
        assert refused.value.retry_after >= 30, why
    assert depth(app) == before and provider.requests == 0


def test_status_counts_the_answers_and_the_strategy(
    app: Any, env: dict[str, str], provider: ScriptedServer
) -> None:
    """``status --json`` counts the refusals answered and the fallback kind that answered them."""
    user = f"u-{uuid.uuid4().hex[:6]}"
    app.ask.apply_async(("invoice 1", provider.url), user_id=user)
    app.ask.apply_async(("hello", provider.url), user_id=user).get(timeout=10)
    report = status_report(env, "tests.integration.answerapp")
    minutes = (report["this_minute"], report["last_minute"])  # the calls may straddle a minute
    assert sum(m["throttled_by_strategy"].get("answer", 0) for m in minutes) >= 1
    assert sum(m["fallbacks"].get("template", 0) for m in minutes) >= 1


def test_work_paced_beyond_the_horizon_is_answered_not_refused(app: Any, provider: ScriptedServer) -> None:
    """At normal load, a call whose slot lies past the pacing horizon is answered at once."""
    user, quiet = f"u-{uuid.uuid4().hex[:6]}", f"{app.QUEUE}-quiet"
    app.ask_quiet.apply_async(("invoice 1", provider.url), user_id=user)  # the user's token
    app.ask_quiet.apply_async(("invoice 2", provider.url), user_id=user)  # paced: its slot a minute on
    assert depth(app, quiet) == 2
    answered = app.ask_quiet.apply_async(("invoice 3", provider.url), user_id=user)  # two minutes on
    assert depth(app, quiet) == 2 and provider.requests == 0
    result: Any = AsyncResult(answered.id, app=app.app).get(timeout=10)
    assert isinstance(result, FallbackResult) and result.kind == "rule_based"
    assert "pacing horizon" in result.reason
