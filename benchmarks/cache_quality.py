"""How far the semantic cache's answers can be trusted, on labelled question pairs.

``python benchmarks/cache_quality.py``: every pair of each set goes through the cache as a
user's would (``cache_eval``): alone, each in a namespace of its own, and shared, every
cached question answered in one namespace. A paraphrase served is recall; a near miss
served is a wrong answer, given with its Wilson 95 % interval; in the shared cache a
paraphrase served another question's answer is wrong too.

The sets (``data/``): the template set (``cache_pairs.py`` writes it; the gate's lexicon
was written against its kinds of edit), and the pairs written one by one apart from the
gate (``data/written``): the tuning half the gate was built on, then the test half and
the held-out set, which nothing was tuned on and which the docs report. Each embedder
runs at its documented similarity, beside similarity alone (no gate) as the baseline.

With evidence (template set): each pair is asked after the provider has answered the
other questions asked of the same cached question (leave one out).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from cache_eval import SETS, Remembered, alone, cache_for, load, shared

from celery_resilience.fallbacks.minilm import MiniLMEmbedder
from celery_resilience.fallbacks.similarity import HashingEmbedder
from celery_resilience.fallbacks.wordllama import WordLlamaEmbedder

# Each embedder at the similarity the docs give for it.
SETUPS = (
    ("hashing", HashingEmbedder, 0.3),
    ("wordllama", WordLlamaEmbedder, 0.3),
    ("minilm", MiniLMEmbedder, 0.5),
)


RESULTS = Path(__file__).resolve().parent / "results" / "cache_quality.json"


def evaluate_with_evidence(embedder: Remembered, similarity: float) -> tuple[float, float]:
    """Recall and wrong answers with the gate, each entry judged by its other questions."""
    pairs = load(SETS["templates"])
    groups: dict[str, list[dict[str, str]]] = {}
    for pair in pairs:
        groups.setdefault(pair["cached"], []).append(pair)
    cache = cache_for(embedder, similarity, True, "evidence")
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
    sets = {name: load(path) for name, path in SETS.items()}
    for name, pairs in sets.items():
        labels = Counter(pair["label"] for pair in pairs)
        counts = f"{labels['paraphrase']} paraphrases, {labels['near_miss']} near misses"
        print(f"{name}: {len(pairs)} pairs, {counts}")
    header = f"{'embedder':10} {'setup':22} {'set':13} {'mode':7} {'recall':>7} {'wrong':>7} {'Wilson':>15}"
    print(f"\n{header} {'other answer':>12}   wrong answers by kind")
    results: dict[str, dict[str, float]] = {}
    for label, make, similarity in SETUPS:
        embedder = Remembered(make(), label)
        for gate in (True, False):
            setup = f"similarity {similarity}" + (" + gate" if gate else " alone")
            for name, pairs in sets.items():
                modes = (("alone", alone), ("shared", shared)) if name != "templates" else (("alone", alone),)
                for mode, run in modes:
                    outcome = run(pairs, embedder, similarity, gate)
                    low, high = outcome.error_interval()
                    detail = ", ".join(f"{kind} {count}" for kind, count in outcome.wrong.most_common())
                    shares = f"{outcome.recall:>7.1%} {outcome.error:>7.1%}"
                    row = f"{label:10} {setup:22} {name:13} {mode:7} {shares}"
                    print(f"{row} {low:>6.1%} - {high:>5.1%} {outcome.misanswered:>12}   {detail or '-'}")
                    results[f"{label} {setup} {name} {mode}"] = {
                        "recall": outcome.recall,
                        "wrong": outcome.error,
                        "wrong_low": low,
                        "wrong_high": high,
                        "misanswered": outcome.misanswered,
                    }
        recall, wrong = evaluate_with_evidence(embedder, similarity)
        row = f"{label:10} {'+ gate + evidence':22} {'templates':13} {'alone':7}"
        print(f"{row} {recall:>7.1%} {wrong:>7.2%}")
        per_text = embedder.seconds / max(1, embedder.calls) * 1000
        print(f"{label:10} embedding: {per_text:.2f} ms a text (mean)\n")
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"(written to {RESULTS.relative_to(RESULTS.parents[2])})")


if __name__ == "__main__":
    main()
