"""The semantic cache on both stores."""

from __future__ import annotations

from celery_resilience.fallbacks.cache import SemanticCache
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock

PARAMS = {"model": "gpt-4o-mini"}


def test_a_paraphrase_is_served_with_its_scores(store: Store) -> None:
    """A successful answer comes back for a similar question, with similarity and quality."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.classify", PARAMS, "classify this email about an invoice", {"category": "billing"})
    hit = cache.lookup("ai.classify", PARAMS, "classify this email about an invoice please")
    assert hit is not None and hit.answer == {"category": "billing"}
    assert hit.similarity >= 0.7 and hit.quality > 0.6


def test_the_opposite_question_is_refused(store: Store) -> None:
    """'down' is not 'up': similar enough to be a candidate, refused by the quality gate."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", PARAMS, "is the server down?", "yes, since 09:27")
    assert cache.lookup("ai.ask", PARAMS, "is the server up?") is None
    assert cache.lookup("ai.ask", PARAMS, "is the server down?") is not None


def test_exact_match_parameters_separate_answers(store: Store) -> None:
    """An answer from another model (or language) is never served."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", {"model": "a"}, "how do I reset my password", "use the link")
    assert cache.lookup("ai.ask", {"model": "b"}, "how do I reset my password") is None
    assert cache.lookup("ai.other", {"model": "a"}, "how do I reset my password") is None


def test_size_is_bounded_least_recently_used_first(store: Store, clock: FakeClock) -> None:
    """With room for two, a third entry evicts the one used longest ago; a hit counts as use."""
    cache = SemanticCache(lambda: store, max_entries=2)
    cache.put("ai.ask", PARAMS, "reset my password for the billing portal", 1)
    clock.advance(1)
    cache.put("ai.ask", PARAMS, "rotate the api key for the billing portal", 2)
    clock.advance(1)
    assert cache.lookup("ai.ask", PARAMS, "reset my password for the billing portal") is not None
    clock.advance(1)
    cache.put("ai.ask", PARAMS, "close the account for the billing portal", 3)
    assert cache.lookup("ai.ask", PARAMS, "rotate the api key for the billing portal") is None
    assert cache.lookup("ai.ask", PARAMS, "reset my password for the billing portal") is not None


def test_entries_expire_after_the_ttl_since_last_use(store: Store, clock: FakeClock) -> None:
    """Served in time, an entry's TTL starts again; unused for longer than the TTL, it is gone."""
    cache = SemanticCache(lambda: store, ttl=100, max_age=10_000)
    question = "how do I reset my password"
    cache.put("ai.ask", PARAMS, question, "use the link")
    clock.advance(90)
    assert cache.lookup("ai.ask", PARAMS, question) is not None
    clock.advance(90)  # 180 s after storing, 90 s after the last use
    assert cache.lookup("ai.ask", PARAMS, question) is not None
    clock.advance(101)
    assert cache.lookup("ai.ask", PARAMS, question) is None


def test_an_old_answer_is_not_trusted_however_often_it_is_used(store: Store, clock: FakeClock) -> None:
    """Past max_age the answer is refused even though the cache still holds it."""
    cache = SemanticCache(lambda: store, ttl=100, max_age=150)
    question = "how do I reset my password"
    cache.put("ai.ask", PARAMS, question, "use the link")
    clock.advance(80)
    assert cache.lookup("ai.ask", PARAMS, question) is not None
    clock.advance(80)
    assert cache.lookup("ai.ask", PARAMS, question) is None


def test_an_answer_that_is_not_json_is_refused_by_the_cache(store: Store) -> None:
    """The cache stores JSON; other answers raise TypeError, which AITask treats as 'not cached'."""
    import pytest

    cache = SemanticCache(lambda: store)
    with pytest.raises(TypeError):
        cache.put("ai.ask", PARAMS, "how do I reset my password", object())
