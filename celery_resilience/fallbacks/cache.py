"""The semantic cache: answers of successful AI calls, found again for similar questions.

Filled by ``AITask``s that name their prompt argument (``cache_prompt``), read by the
``"cached_similar"`` fallback step. Parameters that must match exactly
(``cache_match``: the model, the language) are part of the namespace, so an answer
is never served across them. Lookup:
1. candidates sharing content words with the question, from the store's inverted index;
2. cosine similarity >= ``similarity`` (a similarity in [0, 1], default 0.3);
3. the independent quality score > ``min_quality`` (default 0.6), which refuses
   opposite questions, other numbers and names, flipped negations and stale answers;
4. the entry's own evidence (``evidence``): its estimated error at this similarity within
   ``max_error`` (default 0.02), learned by ``check`` from the provider's own answers.

Entries expire ``ttl`` seconds after their last use (a hit refreshes them), and each
namespace keeps at most ``max_entries``, the least recently used going first. Apart
from that, an answer loses quality with its own age and is never served once it is
``max_age`` old: a much-used answer stays cached, but not forever trusted.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .alignment import aligned, index_term, spelled_out
from .evidence import KEEP, estimated_error, same_answer
from .gate import quality
from .port import CacheEntry, CacheStore
from .similarity import Embedder, HashingEmbedder, content_words, cosine

__all__ = ["SemanticCache", "CacheHit", "Judge"]

Judge = Callable[[Any, Any], bool]
"""Whether a cached answer and the provider's fresh one agree."""

_MAX_TERMS = 32


@dataclass(frozen=True, slots=True)
class CacheHit:
    answer: Any
    question: str
    similarity: float
    quality: float


class SemanticCache:
    def __init__(
        self,
        store: Callable[[], CacheStore],
        embedder: Embedder | None = None,
        *,
        similarity: float = 0.3,
        min_quality: float = 0.6,
        ttl: float = 86_400.0,
        max_age: float = 7 * 86_400.0,
        max_entries: int = 10_000,
        candidates: int = 50,
        max_error: float = 0.02,
        judge: Judge = same_answer,
    ) -> None:
        self._store = store
        self.embedder: Embedder = embedder or HashingEmbedder()
        # Which model made a vector: its declared name, else the callable's full name (a
        # function's own, an instance's class), so two custom embedders never share entries.
        named = self.embedder if inspect.isroutine(self.embedder) else type(self.embedder)
        self._model = getattr(self.embedder, "name", None) or f"{named.__module__}.{named.__qualname__}"
        self.similarity = similarity
        self.min_quality = min_quality
        self.ttl = ttl
        self.max_age = max_age
        self.max_entries = max_entries
        self.candidates = candidates
        self.max_error = max_error
        self.judge = judge

    def namespace(self, task: str, params: Mapping[str, Any]) -> str:
        """One namespace per task, set of exact-match parameters and embedder: switching
        embedders never compares vectors of different models (the old entries expire)."""
        key = json.dumps([params, self._model], sort_keys=True, default=str)
        return f"{task}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    @staticmethod
    def terms(question: str) -> list[str]:
        """What the question is indexed under: its content words, each in the one form its
        inflections share, so that "dogs" finds "dog"."""
        return sorted({index_term(word) for word in content_words(question)})[:_MAX_TERMS]

    def embed(self, question: str) -> dict[int, float]:
        """The question's vector: computed once, it serves a ``check`` and a ``put`` of the
        same answer (an embedder may take tens of milliseconds a text)."""
        return _sparse(self.embedder(question))

    def put(
        self,
        task: str,
        params: Mapping[str, Any],
        question: str,
        answer: Any,
        vector: dict[int, float] | None = None,
    ) -> None:
        store = self._store()
        entry = CacheEntry(
            id=_entry_id(question),
            question=question,
            answer=answer,
            vector=vector if vector is not None else self.embed(question),
            terms=self.terms(question),
            at=store.now(),
        )
        store.cache_put(self.namespace(task, params), entry, self.max_entries, self.ttl)

    def lookup(self, task: str, params: Mapping[str, Any], question: str) -> CacheHit | None:
        """The best cached answer that is similar enough, passes the quality gate and whose
        evidence keeps its estimated error within ``max_error``."""
        namespace = self.namespace(task, params)
        found = self._passing(namespace, question, trusted=True)
        if not found:
            return None
        same, score, similar, entry = found[0]
        if same and len({_canonical(e.answer) for s, _, _, e in found if s}) > 1:
            return None  # two answers to what reads as this very question: neither is shown right
        self._store().cache_touch(namespace, entry.id)
        return CacheHit(entry.answer, entry.question, similar, score)

    def check(
        self,
        task: str,
        params: Mapping[str, Any],
        question: str,
        answer: Any,
        vector: dict[int, float] | None = None,
    ) -> bool | None:
        """Judge every entry the gate would let answer ``question`` (evidence aside) against
        the provider's ``answer`` to it, each keeping its judgement: paraphrases cached apart
        share a wrong answer. Whether the best of them agreed; None when there is none but
        the question's own."""
        namespace = self.namespace(task, params)
        found = self._passing(namespace, question, trusted=False, skip=_entry_id(question), vector=vector)
        if not found:
            return None
        judged = [(e.id, (similar, bool(self.judge(e.answer, answer)))) for _, _, similar, e in found]
        self._store().cache_judge(namespace, judged, KEEP)
        return judged[0][1][1]

    def _passing(
        self,
        namespace: str,
        question: str,
        *,
        trusted: bool,
        skip: str | None = None,
        vector: dict[int, float] | None = None,
    ) -> list[tuple[bool, float, float, CacheEntry]]:
        """The candidates similar enough that pass the gate (and, ``trusted``, their own
        evidence), best first: those saying the same thing as the question, then by quality
        and similarity. Each with whether it says the same thing, its quality, its similarity."""
        terms = self.terms(question)
        if not terms:
            return []
        store = self._store()
        if vector is None:
            vector = self.embed(question)
        now = store.now()
        found: list[tuple[bool, float, float, CacheEntry]] = []
        for entry in store.cache_candidates(namespace, terms, self.candidates, self.ttl):
            if entry.id == skip:
                continue
            similar = cosine(vector, entry.vector)
            asked, cached = spelled_out(question, entry.question)
            if similar < self.similarity and (asked, cached) != (question, entry.question):
                # An acronym written out: how close the two are once they say it alike.
                similar = cosine(self.embed(asked), self.embed(cached))
            if similar < self.similarity:
                continue
            score = quality(asked, cached, age=max(0.0, now - entry.at), max_age=self.max_age)
            if score <= self.min_quality:
                continue
            same = aligned(asked, cached)
            if trusted and estimated_error(entry.evidence, similar, same) > self.max_error:
                continue
            found.append((same, score, similar, entry))
        found.sort(key=lambda item: item[:3], reverse=True)
        return found


def _canonical(answer: Any) -> str:
    return json.dumps(answer, sort_keys=True, default=str)


def _entry_id(question: str) -> str:
    return hashlib.sha256(question.encode()).hexdigest()[:24]


def _sparse(vector: Mapping[int, float] | Sequence[float]) -> dict[int, float]:
    if isinstance(vector, Mapping):
        return {int(k): float(v) for k, v in vector.items()}
    return {i: float(v) for i, v in enumerate(vector) if v}
