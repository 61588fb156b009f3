"""The semantic cache learning, from a real provider's answers, which entries it may serve."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from celery_resilience import BreakerState, FallbackResult, Resilience
from celery_resilience.cli import status_report
from tests.http_server import Answer, ScriptedServer
from tests.integration.conftest import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.integration

ACTIONS = ("downgrade", "upgrade", "cancel", "pause")


def by_meaning(body: bytes) -> Answer:
    """A provider that answers by what the question asks to do."""
    question = json.loads(body)["question"].lower()
    action = next(a for a in ACTIONS if a in question)
    return Answer(200, {"answer": f"Settings, then {action.title()}."})


@pytest.fixture(scope="module")
def cache(integration_env: dict[str, str]) -> Iterator[ModuleType]:
    from tests.integration import cacheapp

    worker = start_worker(integration_env, "tests.integration.cacheapp", cacheapp.QUEUE,
                          extra=["-n", f"cache-{uuid.uuid4().hex[:6]}@%h"])  # fmt: skip
    try:
        assert cacheapp.ping.delay().get(timeout=60) == "pong"
        Resilience.of(cacheapp.app).store.purge()
        yield cacheapp
    finally:
        stop_worker(worker)
        Resilience.of(cacheapp.app).store.purge()


@pytest.fixture
def provider() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.answer_for = by_meaning
    yield server
    server.close()


def close_breaker(cache: ModuleType, provider: ScriptedServer) -> None:
    """Close the provider's breaker, and wait until the worker has it: the transition
    reaches the worker by pub/sub, a moment after this process has it."""
    Resilience.of(cache.app).breakers.force("provider", BreakerState.CLOSED)
    probe = f"probe-{uuid.uuid4().hex[:6]}"  # a shop of its own: the probes teach no other
    wait_for(
        lambda: (
            not isinstance(
                cache.ask.delay("How do I pause my subscription?", provider.url, probe).get(timeout=60),
                FallbackResult,
            )
        )
    )


def counted(report: dict[str, Any], field: str) -> float:
    return float(
        sum(report[minute][field].get("cache.ask", 0.0) for minute in ("this_minute", "last_minute"))
    )


def test_an_entry_the_provider_contradicted_is_not_served_when_it_is_down(
    cache: ModuleType, provider: ScriptedServer
) -> None:
    """Another intent is refused without evidence; a paraphrase is served and names its question."""
    learned, fresh = f"learned-{uuid.uuid4().hex[:6]}", f"fresh-{uuid.uuid4().hex[:6]}"

    def ask(question: str, shop: str) -> Any:
        return cache.ask.delay(question, provider.url, shop).get(timeout=60)

    before = status_report(cache.app)
    # The provider answers: every answer fills the cache and is judged against it.
    assert ask("How do I cancel my subscription?", fresh) == "Settings, then Cancel."
    assert ask("How do I cancel my subscription?", learned) == "Settings, then Cancel."
    assert ask("How can I cancel my subscription?", learned) == "Settings, then Cancel."
    # Judged against both cancel entries: neither answers downgrade any more.
    assert ask("How do I upgrade my subscription?", learned) == "Settings, then Upgrade."
    report = status_report(cache.app)
    assert counted(report, "cache_checks") - counted(before, "cache_checks") == 2
    assert counted(report, "cache_disagreements") - counted(before, "cache_disagreements") == 1

    Resilience.of(cache.app).breakers.force("provider", BreakerState.FORCED_OPEN)
    try:
        calls = provider.requests
        gate_alone = ask("How do I downgrade my subscription?", fresh)
        learned_answer = ask("How do I downgrade my subscription?", learned)
        paraphrase = ask("Please, how do I cancel my subscription?", learned)
        assert provider.requests == calls
    finally:
        close_breaker(cache, provider)
    # Downgrading is not what any entry was asked: refused without evidence, and refused
    # with the provider's disagreement; the template answers both.
    assert isinstance(gate_alone, FallbackResult) and gate_alone.kind == "template"
    assert isinstance(learned_answer, FallbackResult) and learned_answer.kind == "template"
    assert isinstance(paraphrase, FallbackResult) and paraphrase.kind == "cached_similar"
    assert paraphrase.value == "Settings, then Cancel."
    assert paraphrase.question in ("How do I cancel my subscription?", "How can I cancel my subscription?")


OWNERS = ("team", "family", "school", "club", "office", "shop", "studio", "church", "charity", "clinic",
          "band", "lab", "farm", "gym", "hotel", "cafe", "garage", "library", "museum", "theatre", "union",
          "league")  # fmt: skip


def test_agreements_from_the_provider_let_an_entry_serve_a_question_that_differs(
    cache: ModuleType, provider: ScriptedServer
) -> None:
    """After 22 agreeing answers to less similar questions, an entry serves one that differs from its own."""
    shop = f"agreed-{uuid.uuid4().hex[:6]}"

    def ask(question: str) -> Any:
        return cache.ask.delay(question, provider.url, shop).get(timeout=60)

    assert ask("How do I cancel my subscription?") == "Settings, then Cancel."
    asked = "How do I cancel my subscription plan?"
    breakers = Resilience.of(cache.app).breakers
    breakers.force("provider", BreakerState.FORCED_OPEN)
    try:
        unjudged = ask(asked)
    finally:
        close_breaker(cache, provider)
    # The provider answers questions that differ more: each agreement is judged and kept.
    for owner in OWNERS:
        assert ask(f"How do I cancel my subscription plan for the {owner}?") == "Settings, then Cancel."
    breakers.force("provider", BreakerState.FORCED_OPEN)
    try:
        calls = provider.requests
        judged = ask(asked)
        assert provider.requests == calls
    finally:
        close_breaker(cache, provider)
    assert isinstance(unjudged, FallbackResult) and unjudged.kind == "template"
    assert isinstance(judged, FallbackResult) and judged.kind == "cached_similar"
    assert judged.value == "Settings, then Cancel." and judged.question != asked  # another question's answer
