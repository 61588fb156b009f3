"""Fallback chains with real workers and two local HTTP servers standing in for two providers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from celery_resilience import BreakerState, FallbackExhausted, FallbackResult, Resilience
from tests.http_server import ScriptedServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def providers() -> Iterator[tuple[ScriptedServer, ScriptedServer]]:
    primary, secondary = ScriptedServer(), ScriptedServer()
    yield primary, secondary
    primary.close()
    secondary.close()


@pytest.fixture
def ai(ai_worker: Any, providers: tuple[ScriptedServer, ScriptedServer]) -> ModuleType:
    from tests.integration import aiapp

    primary, secondary = providers
    primary.respond(200, {"answer": "from primary"})
    secondary.respond(200, {"answer": "from secondary"})
    primary.requests = secondary.requests = 0
    breakers = Resilience.of(aiapp.app).breakers
    for name in ("primary", "secondary"):
        breakers.force(name, BreakerState.CLOSED)
    return aiapp


def ask(
    ai: ModuleType, providers: tuple[ScriptedServer, ScriptedServer], prompt: str, task: str = "ask_primary"
) -> Any:
    primary, secondary = providers
    return getattr(ai, task).delay(prompt, primary.url, secondary.url)


def test_a_rate_limited_primary_goes_to_the_second_provider(ai: ModuleType, providers: Any) -> None:
    """429 from the primary: the answer comes from the second provider, labelled as such."""
    primary, _ = providers
    primary.respond(
        429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}, {"retry-after": "1"}
    )
    result = ask(ai, providers, "prioritise the invoice task").get(timeout=60)
    assert isinstance(result, FallbackResult)
    assert result.value == {"answer": "from secondary", "prompt": "prioritise the invoice task"}
    assert (result.kind, result.confidence, result.source) == (
        "alternative_provider",
        1.0,
        "ai.ask_secondary",
    )
    assert "HTTPStatusError" in result.reason and primary.requests == 1


def test_an_open_breaker_routes_at_enqueue_time_under_the_same_task_id(
    ai: ModuleType, providers: Any
) -> None:
    """With the breaker open the chain is published instead, and the caller's task id gets its answer."""
    primary, secondary = providers
    Resilience.of(ai.app).breakers.force("primary", BreakerState.FORCED_OPEN)
    task_id = f"chosen-by-caller-{uuid.uuid4().hex}"
    async_result = ai.ask_primary.apply_async(("summarise", primary.url, secondary.url), task_id=task_id)
    assert async_result.id == task_id
    result = async_result.get(timeout=60)
    assert isinstance(result, FallbackResult) and result.source == "ai.ask_secondary"
    assert "forced_open" in result.reason
    assert primary.requests == 0 and secondary.requests == 1


def test_with_no_provider_left_the_cache_rules_and_template_answer_in_turn(
    ai: ModuleType, providers: Any
) -> None:
    """With no provider left, the cache, then the rules, then the template answer in turn."""
    _, secondary = providers
    assert (
        ask(ai, providers, "is the server down?").get(timeout=60)["answer"] == "from primary"
    )  # fills the cache
    Resilience.of(ai.app).breakers.force("primary", BreakerState.FORCED_OPEN)
    secondary.respond(500, {"error": "down"})

    similar = ask(ai, providers, "Are the servers down?").get(timeout=60)
    assert similar.kind == "cached_similar" and similar.value["answer"] == "from primary"
    assert similar.question == "is the server down?"  # whose answer it is
    assert 0.6 < similar.confidence <= 1.0
    assert [a["step"] for a in similar.attempts] == ["ai.ask_secondary"]

    opposite = ask(ai, providers, "is the server up?").get(timeout=60)
    assert (opposite.kind, opposite.confidence, opposite.value) == ("rule_based", 0.4, {"label": "normal"})
    assert [a["step"] for a in opposite.attempts] == ["ai.ask_secondary", "cached_similar"]

    template = ask(ai, providers, "an unruly question").get(timeout=60)
    assert (template.kind, template.confidence) == ("template", 0.2)
    assert template.value == "Sorry, we cannot answer 'an unruly question' right now."
    assert len(template.attempts) == 3


def test_an_exhausted_chain_raises_one_clear_error(ai: ModuleType, providers: Any) -> None:
    """Every step failed: the caller gets FallbackExhausted naming each step and why."""
    primary, secondary = providers
    primary.respond(503, {"error": "overloaded"})
    secondary.respond(503, {"error": "overloaded"})
    with pytest.raises(FallbackExhausted) as caught:
        ask(ai, providers, "anything", task="ask_bare").get(timeout=60)
    assert caught.value.task == "ai.ask_bare"
    assert [a["step"] for a in caught.value.attempts] == ["ai.ask_secondary"]
    assert "503" in str(caught.value)


def test_a_bad_request_reaches_no_other_provider(ai: ModuleType, providers: Any) -> None:
    """400 (the input is wrong everywhere): the second provider is skipped, rules answer."""
    primary, secondary = providers
    primary.respond(400, {"error": {"message": "'messages' is invalid", "code": "invalid_value"}})
    result = ask(ai, providers, "urgent: fix the build").get(timeout=60)
    assert (result.kind, result.value) == ("rule_based", {"label": "urgent"})
    assert secondary.requests == 0
    assert result.attempts[0]["error"].startswith("skipped")


def test_nothing_is_lost(ai: ModuleType, providers: Any) -> None:
    """A mixed batch: every call ends with the primary's answer, a fallback answer or a clear error."""
    primary, _ = providers
    primary.respond(429, {"error": {"message": "slow down"}})
    results = [ask(ai, providers, f"question {i}") for i in range(10)]
    outcomes = []
    for result in results:
        value = result.get(timeout=60, propagate=False)
        outcomes.append(type(value).__name__)
    assert outcomes == ["FallbackResult"] * 10
