"""The semantic cache on both stores."""

from __future__ import annotations

from celery_resilience.fallbacks.cache import SemanticCache
from celery_resilience.fallbacks.evidence import KEEP
from celery_resilience.fallbacks.similarity import HashingEmbedder, cosine
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


def test_without_evidence_only_the_same_question_is_served(store: Store) -> None:
    """An entry never judged answers a question that says the same thing, not another intent."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "Settings, then Cancel.")
    assert cache.lookup("ai.ask", PARAMS, "How do I downgrade my subscription?") is None
    assert cache.lookup("ai.ask", PARAMS, "How do I cancel my subscription plan?") is None
    hit = cache.lookup("ai.ask", PARAMS, "how can i cancel my SUBSCRIPTIONS")
    assert hit is not None and hit.answer == "Settings, then Cancel."
    assert hit.question == "How do I cancel my subscription?"


def test_agreements_let_an_entry_serve_a_question_that_differs(store: Store) -> None:
    """A difference serves once enough of the provider's answers agreed at that similarity."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "Settings, then Cancel.")
    question = "How do I cancel my subscription plan?"
    for _ in range(21):
        assert cache.check("ai.ask", PARAMS, question, "Settings, then Cancel.") is True
    assert cache.lookup("ai.ask", PARAMS, question) is None  # 0.45 / 22: not yet under 2 %
    assert cache.check("ai.ask", PARAMS, question, "Settings, then Cancel.") is True
    hit = cache.lookup("ai.ask", PARAMS, question)
    assert hit is not None and hit.answer == "Settings, then Cancel."


def test_an_entry_the_provider_contradicted_stops_serving_questions_like_it(store: Store) -> None:
    """Upgrading is not cancelling: told so, the entry stops serving even the same question."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "Settings, then Cancel.")
    assert (
        cache.check("ai.ask", PARAMS, "How do I upgrade my subscription?", "Settings, then Upgrade.") is False
    )
    # The disagreement came from a question at least as similar as this one: it now counts.
    assert cache.lookup("ai.ask", PARAMS, "How do I downgrade my subscription?") is None


def test_agreeing_answers_keep_an_entry_serving(store: Store) -> None:
    """A paraphrase answered alike adds evidence for the entry, which goes on serving."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "Settings, then Cancel.")
    assert cache.check("ai.ask", PARAMS, "How can I cancel my subscription?", "settings, then cancel") is True
    hit = cache.lookup("ai.ask", PARAMS, "How do I cancel my subscription please?")
    assert hit is not None and hit.answer == "Settings, then Cancel."


def test_a_question_is_not_judged_against_its_own_entry(store: Store) -> None:
    """The only entry being the question's own, there is nothing to judge."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "old answer")
    assert cache.check("ai.ask", PARAMS, "How do I cancel my subscription?", "new answer") is None


def test_a_tight_bound_serves_only_entries_with_evidence(store: Store) -> None:
    """Under a bound below the prior, an entry serves once enough agreements back it."""
    cache = SemanticCache(lambda: store, max_error=0.005)
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "Settings, then Cancel.")
    question = "How can I cancel my subscription?"
    assert cache.lookup("ai.ask", PARAMS, question) is None
    for _ in range(15):
        assert cache.check("ai.ask", PARAMS, question, "Settings, then Cancel.") is True
    hit = cache.lookup("ai.ask", PARAMS, question)
    assert hit is not None and hit.answer == "Settings, then Cancel."


def test_evidence_is_bounded_and_goes_with_its_entry(store: Store, clock: FakeClock) -> None:
    """An entry keeps its latest judgements only; expired, it takes them with it."""
    cache = SemanticCache(lambda: store, ttl=100, max_age=10_000)
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "Settings, then Cancel.")
    for _ in range(KEEP + 8):
        cache.check("ai.ask", PARAMS, "How can I cancel my subscription?", "Settings, then Cancel.")
    namespace = cache.namespace("ai.ask", PARAMS)
    (entry,) = store.cache_candidates(namespace, ["cancel"], 5, 100)
    assert len(entry.evidence) == KEEP
    clock.advance(101)
    cache.put("ai.ask", PARAMS, "How do I renew my subscription?", "Settings, then Renew.")
    cache.put("ai.ask", PARAMS, "How do I cancel my subscription?", "Settings, then Cancel.")
    (entry,) = [e for e in store.cache_candidates(namespace, ["cancel"], 5, 100) if "cancel" in e.question]
    assert entry.evidence == ()


def test_two_answers_to_the_same_question_serve_neither(store: Store) -> None:
    """When two entries read as the asked question and answer it differently, neither is served."""
    cache = SemanticCache(lambda: store)
    cache.put("ai.ask", PARAMS, "How do I reset my password?", "Use the link in Settings.")
    cache.put("ai.ask", PARAMS, "how do I reset my passwords", "Ask your administrator.")
    assert cache.lookup("ai.ask", PARAMS, "How can I reset my password?") is None
    cache.put("ai.ask", PARAMS, "how do I reset my passwords", "Use the link in Settings.")
    hit = cache.lookup("ai.ask", PARAMS, "How can I reset my password?")
    assert hit is not None and hit.answer == "Use the link in Settings."


def test_an_acronym_is_served_the_answer_to_its_words_written_out(store: Store) -> None:
    """'ETA' finds the answer to 'estimated time of arrival': similar once written alike."""
    embedder = HashingEmbedder()
    cached, asked = "What is the estimated time of arrival for my order?", "What is the ETA for my order?"
    assert cosine(embedder(asked), embedder(cached)) < 0.7  # apart, as written
    cache = SemanticCache(lambda: store, embedder, similarity=0.7)
    cache.put("ai.ask", PARAMS, cached, "Tuesday")
    hit = cache.lookup("ai.ask", PARAMS, asked)
    assert hit is not None and hit.answer == "Tuesday" and hit.question == cached
    assert cache.lookup("ai.ask", PARAMS, "What is the ETD for my order?") is None
