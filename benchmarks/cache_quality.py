"""How far the semantic cache's answers can be trusted, on the repository's labelled set.

``python benchmarks/cache_quality.py``: every pair of ``data/cache_pairs.jsonl`` (written
by ``cache_pairs.py``) goes through the cache as a user's would: the cached question's
answer is put, the asked question looked up. A paraphrase served is recall; a near miss
served is a wrong answer. Each setup runs side by side with a fixed similarity
threshold on the same embedder (no quality gate), the baseline the gate must beat.
Lookup latency at 1k / 10k / 50k entries is measured by ``benchmarks/fallback.py``.

With evidence: each pair is asked again after the provider answered the other questions
asked of the same cached question (leave one out): a paraphrase's answer agrees with the
cached one, a near miss's does not. The cache judges the entry by those answers
(``SemanticCache.check``), as it does while the provider is healthy.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from celery_resilience.fallbacks.cache import SemanticCache
from celery_resilience.fallbacks.minilm import MiniLMEmbedder
from celery_resilience.fallbacks.similarity import Embedder, HashingEmbedder
from celery_resilience.fallbacks.wordllama import WordLlamaEmbedder
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace

PAIRS = Path(__file__).resolve().parent / "data" / "cache_pairs.jsonl"


class Remembered:
    """An embedder's vectors, each text embedded once: the set repeats its questions."""

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


def evaluate(embedder: Remembered, similarity: float, gate: bool) -> tuple[float, float, Counter[str]]:
    """Recall of paraphrases, share of near misses served, and the wrong ones by category."""
    store = MemoryStore(KeySpace("bench-cache-quality", 1))
    cache = SemanticCache(lambda: store, embedder, similarity=similarity, min_quality=0.6 if gate else -1.0)
    served = Counter[str]()
    totals = Counter[str]()
    wrong = Counter[str]()
    for index, line in enumerate(PAIRS.read_text().splitlines()):
        pair = json.loads(line)
        task = f"pair{index}"  # one namespace per pair: nothing else to find
        cache.put(task, {}, pair["cached"], "the cached answer")
        hit = cache.lookup(task, {}, pair["asked"]) is not None
        totals[pair["label"]] += 1
        served[pair["label"]] += hit
        if hit and pair["label"] == "near_miss":
            wrong[pair["category"]] += 1
    return served["paraphrase"] / totals["paraphrase"], served["near_miss"] / totals["near_miss"], wrong


def evaluate_with_evidence(embedder: Remembered, similarity: float) -> tuple[float, float]:
    """Recall and wrong answers with the gate, each entry judged by its other questions."""
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    groups: dict[str, list[dict[str, str]]] = {}
    for pair in pairs:
        groups.setdefault(pair["cached"], []).append(pair)
    store = MemoryStore(KeySpace("bench-cache-evidence", 1))
    cache = SemanticCache(lambda: store, embedder, similarity=similarity)
    served, totals = Counter[str](), Counter[str]()
    for index, pair in enumerate(pairs):
        task = f"pair{index}"
        cache.put(task, {}, pair["cached"], "the cached answer")
        for other in groups[pair["cached"]]:
            if other is not pair:
                fresh = "the cached answer" if other["label"] == "paraphrase" else "another answer"
                cache.check(task, {}, other["asked"], fresh)
        totals[pair["label"]] += 1
        served[pair["label"]] += cache.lookup(task, {}, pair["asked"]) is not None
    return served["paraphrase"] / totals["paraphrase"], served["near_miss"] / totals["near_miss"]


def main() -> None:
    lines = PAIRS.read_text().splitlines()
    labels = Counter(json.loads(line)["label"] for line in lines)
    print(f"{len(lines)} pairs: {labels['paraphrase']} paraphrases, {labels['near_miss']} near misses\n")
    print(f"{'embedder':10} {'setup':34} {'recall':>7} {'wrong':>7}   wrong answers by category")
    embedders = [
        Remembered(HashingEmbedder(), "hashing"),
        Remembered(WordLlamaEmbedder(), "wordllama"),
        Remembered(MiniLMEmbedder(), "minilm"),
    ]
    grid = {
        "hashing": (0.7, 0.5, 0.4, 0.35, 0.3),
        "wordllama": (0.8, 0.7, 0.6, 0.5, 0.3),
        "minilm": (0.9, 0.85, 0.8, 0.7, 0.5),
    }
    for embedder in embedders:
        for similarity in grid[embedder.name]:
            for gate in (False, True):
                recall, wrong_share, wrong = evaluate(embedder, similarity, gate)
                setup = f"similarity >= {similarity}" + (" + quality gate" if gate else " alone (baseline)")
                detail = ", ".join(f"{category} {count}" for category, count in wrong.most_common())
                print(f"{embedder.name:10} {setup:34} {recall:>7.1%} {wrong_share:>7.1%}   {detail or '-'}")
            recall, wrong_share = evaluate_with_evidence(embedder, similarity)
            setup = f"similarity >= {similarity} + gate + evidence"
            print(f"{embedder.name:10} {setup:34} {recall:>7.1%} {wrong_share:>7.1%}")
        per_text = embedder.seconds / max(1, embedder.calls) * 1000
        print(f"{embedder.name:10} embedding: {per_text:.2f} ms a text\n")


if __name__ == "__main__":
    main()
