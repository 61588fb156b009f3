"""Running labelled question pairs through the semantic cache, as a user's lookups would.

Shared by ``cache_quality.py`` (every set, every embedder) and by whoever tunes the gate
on ``data/written/tune.jsonl``. Two ways to ask:

- **alone**: each pair in a namespace of its own, the cached question's answer put and the
  asked question looked up. A paraphrase served is recall; a near miss served is a wrong
  answer.
- **shared**: every cached question of the set answered in one namespace, then every
  asked question looked up: a near miss served anything is wrong, and so is a paraphrase
  served another question's answer.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery_resilience.fallbacks.cache import SemanticCache
from celery_resilience.fallbacks.port import CacheEntry
from celery_resilience.fallbacks.similarity import Embedder, cosine
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace

DATA = Path(__file__).resolve().parent / "data"
SETS = {
    "templates": DATA / "cache_pairs.jsonl",
    "written-tune": DATA / "written" / "tune.jsonl",
    "written-test": DATA / "written" / "test.jsonl",
    "held-out": DATA / "written" / "held-out.jsonl",
}

Pair = dict[str, str]


def load(path: Path) -> list[Pair]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wilson(hits: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default)."""
    if total == 0:
        return 0.0, 1.0
    share = hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    spread = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - spread), min(1.0, centre + spread)


class Remembered:
    """An embedder's vectors, each text embedded once: a set repeats its questions."""

    def __init__(self, embedder: Embedder, name: str) -> None:
        self.embedder, self.name, self.vectors = embedder, name, dict[str, Any]()
        self.seconds, self.calls = 0.0, 0

    def __call__(self, text: str) -> Any:
        if text not in self.vectors:
            start = time.perf_counter()
            self.vectors[text] = self.embedder(text)
            self.seconds += time.perf_counter() - start
            self.calls += 1
        return self.vectors[text]


@dataclass
class Outcome:
    """What a set's lookups served."""

    paraphrases: int = 0
    paraphrases_served: int = 0
    near_misses: int = 0
    near_misses_served: int = 0
    misanswered: int = 0  # paraphrases served another question's answer (shared cache only)
    wrong: Counter[str] = field(default_factory=Counter)  # near misses served, by kind
    missed: Counter[str] = field(default_factory=Counter)  # paraphrases refused, by kind
    wrong_pairs: list[Pair] = field(default_factory=list)
    missed_pairs: list[Pair] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.paraphrases_served / max(1, self.paraphrases)

    @property
    def error(self) -> float:
        return self.near_misses_served / max(1, self.near_misses)

    def error_interval(self) -> tuple[float, float]:
        return wilson(self.near_misses_served, self.near_misses)

    def count(self, pair: Pair, served: bool, right: bool = True) -> None:
        if pair["label"] == "paraphrase":
            self.paraphrases += 1
            self.paraphrases_served += served and right
            self.misanswered += served and not right
            if not (served and right):
                self.missed[pair["category"]] += 1
                self.missed_pairs.append(pair)
        else:
            self.near_misses += 1
            self.near_misses_served += served
            if served:
                self.wrong[pair["category"]] += 1
                self.wrong_pairs.append(pair)


class Ungated(SemanticCache):
    """The baseline: whatever is similar enough is served, with no gate and no evidence."""

    def _passing(
        self, namespace: str, question: str, *, trusted: bool, skip: str | None = None, vector: Any = None
    ) -> list[tuple[bool, float, float, CacheEntry]]:
        vector = self.embed(question) if vector is None else vector
        store = self._store()
        found = []
        for entry in store.cache_candidates(namespace, self.terms(question), self.candidates, self.ttl):
            similar = cosine(vector, entry.vector)
            if entry.id != skip and similar >= self.similarity:
                found.append((False, 1.0, similar, entry))
        return sorted(found, key=lambda item: item[2], reverse=True)


def cache_for(embedder: Embedder, similarity: float, gate: bool, name: str) -> SemanticCache:
    store = MemoryStore(KeySpace(f"bench-{name}", 1))
    kind = SemanticCache if gate else Ungated
    return kind(lambda: store, embedder, similarity=similarity)


def alone(pairs: Sequence[Pair], embedder: Embedder, similarity: float, gate: bool = True) -> Outcome:
    """Each pair in its own namespace: nothing else to find."""
    cache = cache_for(embedder, similarity, gate, "alone")
    outcome = Outcome()
    for index, pair in enumerate(pairs):
        task = f"pair{index}"
        cache.put(task, {}, pair["cached"], "the cached answer")
        outcome.count(pair, cache.lookup(task, {}, pair["asked"]) is not None)
    return outcome


def shared(pairs: Sequence[Pair], embedder: Embedder, similarity: float, gate: bool = True) -> Outcome:
    """Every cached question answered in one namespace, each with an answer of its own."""
    cache = cache_for(embedder, similarity, gate, "shared")
    answers = {pair["cached"]: f"answer {index}" for index, pair in enumerate(pairs)}
    for question, answer in answers.items():
        cache.put("shared", {}, question, answer)
    outcome = Outcome()
    for pair in pairs:
        if pair["asked"] in answers:  # asked word for word elsewhere in the set: its own answer
            continue
        hit = cache.lookup("shared", {}, pair["asked"])
        outcome.count(pair, hit is not None, hit is not None and hit.answer == answers[pair["cached"]])
    return outcome
