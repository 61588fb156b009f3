"""What the semantic cache needs of the store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .evidence import Judgement

__all__ = ["CacheStore", "CacheEntry", "RAREST_TERMS", "CANDIDATE_BUDGET"]

# A lookup finds candidates through the question's few rarest terms, adding terms
# (rarest first) only while the entries they name stay within a budget: common words
# name thousands of entries and discriminate nothing.
RAREST_TERMS = 4
CANDIDATE_BUDGET = 2000


@dataclass(frozen=True)
class CacheEntry:
    """One cached answer: the question, its vector and index terms, and when it was stored;
    ``evidence``, kept apart by the store, is how its answer fared against the provider's."""

    id: str
    question: str
    answer: Any
    vector: dict[int, float]
    terms: list[str]
    at: float
    evidence: tuple[Judgement, ...] = ()

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "question": self.question,
                "answer": self.answer,
                "vector": [[k, v] for k, v in self.vector.items()],
                "terms": self.terms,
                "at": self.at,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes, evidence: tuple[Judgement, ...] = ()) -> CacheEntry:
        data = json.loads(raw)
        return cls(
            data["id"],
            data["question"],
            data["answer"],
            {int(k): float(v) for k, v in data["vector"]},
            list(data["terms"]),
            float(data["at"]),
            evidence,
        )


class CacheStore(Protocol):
    def now(self) -> float:
        """The store's clock, in seconds since the epoch."""

    def cache_put(self, namespace: str, entry: CacheEntry, max_entries: int, ttl: float) -> int:
        """Add an entry (indexed by ``entry.terms``); evict the expired and the oldest beyond
        ``max_entries``. Returns how many were evicted."""

    def cache_candidates(self, namespace: str, terms: list[str], limit: int, ttl: float) -> list[CacheEntry]:
        """Up to ``limit`` live entries sharing most terms with a question, best first
        (through the ``RAREST_TERMS`` rarest of them, within ``CANDIDATE_BUDGET``)."""

    def cache_touch(self, namespace: str, entry_id: str) -> None:
        """Mark an entry used now (its TTL starts again)."""

    def cache_judge(self, namespace: str, judged: Sequence[tuple[str, Judgement]], keep: int) -> None:
        """Add each (entry id, judgement) to the live entry's evidence, keeping its last
        ``keep`` (an entry evicted meanwhile takes none)."""
