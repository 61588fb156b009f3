"""Similarity finds candidates; the independent quality score decides whether to serve them."""

from __future__ import annotations

import pytest
from kombu.utils.json import dumps, loads

from celery_resilience.fallbacks.gate import quality
from celery_resilience.fallbacks.result import FallbackResult
from celery_resilience.fallbacks.similarity import HashingEmbedder, cosine

EMBED = HashingEmbedder()

SERVED = [
    ("Is the server down?", "is the server down right now?"),
    ("classify this email about an invoice", "classify this email about an invoice please"),
    ("how do I reset my password", "how can I reset my password"),
]
REFUSED = [
    ("is the server down?", "is the server up?"),  # the design's case: similar, opposite
    (
        "should we enable caching for the api gateway today",
        "should we disable caching for the api gateway today",
    ),
    ("what is the priority of task 12", "what is the priority of task 13"),
    ("summarise the report for Acme", "summarise the report for Globex"),
    ("is the deploy not finished?", "is the deploy finished?"),
]


@pytest.mark.parametrize(("question", "cached"), SERVED + REFUSED)
def test_similar_pairs_pass_the_similarity_threshold(question: str, cached: str) -> None:
    """Every pair here is a candidate (cosine >= 0.7): similarity alone cannot tell them apart."""
    assert cosine(EMBED(question), EMBED(cached)) >= 0.7


@pytest.mark.parametrize(("question", "cached"), SERVED)
def test_paraphrases_pass_the_quality_gate(question: str, cached: str) -> None:
    """Paraphrases of a question pass the quality gate."""
    assert quality(question, cached) > 0.6


@pytest.mark.parametrize(("question", "cached"), REFUSED)
def test_opposites_numbers_names_and_negations_are_refused(question: str, cached: str) -> None:
    """Opposite words, other numbers, other names and a flipped negation are refused."""
    assert quality(question, cached) <= 0.6


def test_stale_answers_lose_quality_and_expire() -> None:
    """Half the maximum age costs a quarter of the score; past it nothing is served."""
    question = "how do I reset my password"
    assert quality(question, question, age=0) == 1.0
    assert quality(question, question, age=43_200, max_age=86_400) == pytest.approx(0.75)
    assert quality(question, question, age=86_400, max_age=86_400) == 0.0


def test_dense_and_sparse_vectors_both_work() -> None:
    """A pluggable embedder may return dense sequences."""
    assert cosine([1.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 1.0]) == 0.0
    assert cosine({1: 1.0}, {2: 1.0}) == 0.0


def test_fallback_results_survive_kombus_json() -> None:
    """Callers get the FallbackResult back from the JSON serializer, not a bare dict."""
    result = FallbackResult(
        {"priority": 3},
        "rule_based",
        0.4,
        "pipeline.rule_based",
        "breaker open",
        [{"step": "pipeline.ask_anthropic", "error": "rate_limit"}],
    )
    assert loads(dumps(result)) == result


def test_templates_fill_known_arguments_and_keep_unknown_ones() -> None:
    """A template never fails on a placeholder the call did not provide."""
    from celery_resilience.fallbacks.chain import format_template

    assert format_template("Sorry, {prompt!r} in {lang}: {missing}", {"prompt": "hi", "lang": "en"}) == (
        "Sorry, 'hi' in en: {missing}"
    )


def test_fallback_exhausted_survives_celerys_result_serialisation() -> None:
    """The caller gets FallbackExhausted back with every step and why."""
    from celery import Celery
    from celery.backends.base import Backend

    from celery_resilience import FallbackExhausted

    error = FallbackExhausted("ai.ask", "breaker open", [{"step": "ai.other", "error": "503"}])
    backend = Backend(app=Celery("x", set_as_current=False), serializer="json")
    rebuilt = backend.exception_to_python(backend.prepare_exception(error, "json"))
    assert type(rebuilt) is FallbackExhausted and rebuilt.attempts == error.attempts
    assert str(rebuilt) == "ai.ask failed (breaker open) and no fallback answered: ai.other: 503"
