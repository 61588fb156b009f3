"""The MiniLM extra with its real weights from the installed package, offline."""

from __future__ import annotations

import pytest

from celery_resilience.errors import ConfigurationError
from celery_resilience.fallbacks.cache import SemanticCache
from celery_resilience.fallbacks.minilm import MiniLMEmbedder
from celery_resilience.fallbacks.settings import read_fallback_settings
from celery_resilience.fallbacks.similarity import HashingEmbedder, cosine
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.validation import SettingsReader


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_paraphrases_are_closer_than_unrelated_questions(minilm: MiniLMEmbedder) -> None:
    """'ship' and 'deliver' share no word, yet the model puts them together."""
    ship, deliver = minilm("Do you ship to Canada?"), minilm("Do you deliver to Canada?")
    unrelated = minilm("What is the refund policy for damaged goods?")
    assert len(ship) == 384
    assert cosine(ship, deliver) > 0.8 > cosine(ship, unrelated)
    assert (
        cosine(HashingEmbedder()("Do you ship to Canada?"), HashingEmbedder()("Do you deliver to Canada?"))
        < 0.7
    )


def test_the_setting_names_it_and_entries_keep_to_their_embedder(minilm: MiniLMEmbedder) -> None:
    """'minilm' builds the embedder; a cache with another embedder never sees its entries."""
    settings = read_fallback_settings(SettingsReader({"resilience_semantic_cache": {"embedder": "minilm"}}))
    assert isinstance(settings.embedder, MiniLMEmbedder)
    store = MemoryStore(KeySpace("minilm", 1))
    SemanticCache(lambda: store, minilm).put("t", {}, "Can I purchase a gift card online?", "yes")
    assert SemanticCache(lambda: store, minilm).lookup("t", {}, "Can I buy gift cards online?") is not None
    assert (
        SemanticCache(lambda: store, HashingEmbedder()).lookup("t", {}, "Can I purchase a gift card online?")
        is None
    )


def test_an_unknown_embedder_name_is_a_clear_error() -> None:
    """A string that is neither a built-in name nor a dotted path names the setting."""
    with pytest.raises(ConfigurationError, match=r"resilience_semantic_cache\['embedder'\]"):
        read_fallback_settings(SettingsReader({"resilience_semantic_cache": {"embedder": "minlm"}}))


def test_two_custom_embedders_never_share_entries() -> None:
    """Entries made by one function are not compared with vectors of another."""

    def first(text: str) -> list[float]:
        return [1.0, 0.0]

    def second(text: str) -> list[float]:
        return [1.0, 0.0]

    store = MemoryStore(KeySpace("custom", 1))
    SemanticCache(lambda: store, first).put("t", {}, "Do you ship to Canada?", "yes")
    assert SemanticCache(lambda: store, first).lookup("t", {}, "Do you ship to Canada?") is not None
    assert SemanticCache(lambda: store, second).lookup("t", {}, "Do you ship to Canada?") is None


def test_a_short_question_is_not_padded_and_embeds_the_same(minilm: MiniLMEmbedder) -> None:
    """No padding to 128 tokens: a short question runs as its own tokens, with the same vector."""
    question = "How do I reset my password?"
    assert len(minilm._tokenizer.encode(question).ids) < 16
    unpadded = minilm(question)
    minilm._tokenizer.enable_padding(length=128)
    try:
        padded = minilm(question)
    finally:
        minilm._tokenizer.no_padding()
    assert max(abs(a - b) for a, b in zip(unpadded, padded, strict=True)) < 1e-5
