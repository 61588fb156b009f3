"""The WordLlama extra with its real weights from the installed package, offline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from celery_resilience.fallbacks.cache import SemanticCache
from celery_resilience.fallbacks.settings import read_fallback_settings
from celery_resilience.fallbacks.similarity import HashingEmbedder, cosine
from celery_resilience.fallbacks.wordllama import WordLlamaEmbedder
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.validation import SettingsReader


@pytest.fixture(scope="module")
def wordllama() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def test_paraphrases_are_closer_than_unrelated_questions(wordllama: WordLlamaEmbedder) -> None:
    """'ship' and 'deliver' share no word, yet their token vectors put them together."""
    ship, deliver = wordllama("Do you ship to Canada?"), wordllama("Do you deliver to Canada?")
    unrelated = wordllama("What is the refund policy for damaged goods?")
    assert len(ship) == 256
    assert cosine(ship, deliver) > 0.8 > cosine(ship, unrelated)


def test_it_loads_with_the_network_out_of_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    """No request leaves the process: weights and tokenizer come from the installed package."""
    import requests

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedder tried to download something")

    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    assert len(WordLlamaEmbedder()("offline")) == 256


def test_the_setting_names_it_and_entries_keep_to_their_embedder(wordllama: WordLlamaEmbedder) -> None:
    """'wordllama' builds the embedder; a cache with another embedder never sees its entries."""
    conf = {"resilience_semantic_cache": {"embedder": "wordllama"}}
    settings = read_fallback_settings(SettingsReader(conf))
    assert isinstance(settings.embedder, WordLlamaEmbedder)
    store = MemoryStore(KeySpace("wordllama", 1))
    SemanticCache(lambda: store, wordllama, similarity=0.6).put(
        "t", {}, "Can I purchase a gift card online?", "yes"
    )
    hit = SemanticCache(lambda: store, wordllama, similarity=0.6).lookup(
        "t", {}, "Can I buy gift cards online?"
    )
    assert hit is not None and hit.answer == "yes"
    assert (
        SemanticCache(lambda: store, HashingEmbedder()).lookup("t", {}, "Can I purchase a gift card online?")
        is None
    )


def test_using_the_embedder_leaves_the_applications_root_logger_alone() -> None:
    """WordLlama's import configures the root logger; the library's import and use of it do not."""
    script = (
        "import logging\n"
        "import celery_resilience\n"
        "from celery_resilience.fallbacks.wordllama import WordLlamaEmbedder\n"
        "before = (list(logging.getLogger().handlers), logging.getLogger().level)\n"
        "WordLlamaEmbedder()('hello')\n"
        "assert (list(logging.getLogger().handlers), logging.getLogger().level) == before\n"
        "assert before == ([], logging.WARNING), before\n"
    )
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
