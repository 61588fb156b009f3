"""Fallback costs, measured in one run on the local Redis.

    python benchmarks/fallback.py [--sizes 1000,10000,50000] [--lookups N]

1. Semantic cache lookup latency (p50 / p99) with 1k, 10k and 50k cached entries in one
   namespace: candidates from the inverted index in one script, then similarity and the
   quality gate in Python; with the default hashing embedder, then with the WordLlama and
   MiniLM extras, embedding the question included. Embedding 50k questions with MiniLM would take 45
   minutes, so entries are drawn from 2,000 questions, each stored many times under its
   own case number with the vector of the question without it (the vectors, the index and
   the work of a lookup are those of 50k real entries); each lookup embeds its question
   in full.
2. What embedding one short question costs each embedder on one core (p50 / p99): the
   MiniLM extra runs a question as its own tokens, not padded to 128.
3. The added latency of routing at enqueue time: ``AITask.apply_async`` with its breaker
   open (the fallback chain is published instead) against a plain ``Task.apply_async`` of
   an app without the plugin, and against the same ``AITask`` with its breaker closed, on
   the same Redis broker.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from typing import Any

import redis
from celery import Celery
from timing import measure

from celery_resilience import AITask, BreakerState, Resilience
from celery_resilience.fallbacks.cache import SemanticCache
from celery_resilience.fallbacks.minilm import MiniLMEmbedder
from celery_resilience.fallbacks.similarity import Embedder
from celery_resilience.fallbacks.wordllama import WordLlamaEmbedder
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore

REDIS = "redis://127.0.0.1:6379"
SUBJECTS = [
    "invoice",
    "server",
    "deploy",
    "password",
    "report",
    "ticket",
    "order",
    "refund",
    "account",
    "build",
    "database",
    "cluster",
    "queue",
    "payment",
    "customer",
    "release",
    "incident",
    "alert",
    "backup",
    "login",
]
ACTIONS = [
    "classify",
    "prioritise",
    "summarise",
    "explain",
    "route",
    "translate",
    "review",
    "escalate",
    "close",
    "reopen",
    "assign",
    "tag",
    "estimate",
    "check",
    "fix",
    "restart",
    "verify",
    "archive",
    "merge",
    "split",
]
DETAILS = [
    "for the billing team",
    "before the weekly meeting",
    "in the staging cluster",
    "from the mobile app",
    "for enterprise customers",
    "after the outage",
    "with high urgency",
    "in the eu region",
    "for the audit",
    "using the new policy",
]


def embedding_cost(embedder: Embedder, count: int = 300) -> tuple[float, float]:
    """p50 and p99 milliseconds to embed one short question (8 to 12 words), after a warm-up."""
    rng = random.Random(7)
    texts = [question(rng, index) for index in range(count)]
    for text in texts[:10]:
        embedder(text)
    spent = []
    for text in texts:
        start = time.perf_counter()
        embedder(text)
        spent.append((time.perf_counter() - start) * 1000)
    spent.sort()
    return statistics.median(spent), spent[int(0.99 * (len(spent) - 1))]


def question(rng: random.Random, index: int) -> str:
    return (
        f"{rng.choice(ACTIONS)} the {rng.choice(SUBJECTS)} {rng.choice(SUBJECTS)} {rng.choice(DETAILS)} "
        f"case {index}"
    )


class Pooled:
    """A slow embedder's vectors for questions drawn from a pool: each question's vector is
    that of its pooled text (without the case number), computed once."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.name = getattr(embedder, "name", "pooled")
        self.vectors: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        base = text.rsplit(" case ", 1)[0]
        if base not in self.vectors:
            self.vectors[base] = self.embedder(base)
        return self.vectors[base]


def cache_benchmark(
    sizes: list[int],
    lookups: int,
    embedder: Embedder | None = None,
    pool: int | None = None,
    similarity: float = 0.3,
) -> dict[int, tuple[float, float, float]]:
    """Size -> (p50 ms, p99 ms, share of lookups served). With ``pool``, entries are drawn
    from that many questions and stored with ``Pooled`` vectors; lookups embed in full."""
    store = RedisStore(f"{REDIS}/13", KeySpace(f"bench-{uuid.uuid4().hex[:8]}", 16))
    filling = Pooled(embedder) if pool is not None and embedder is not None else embedder
    filler = SemanticCache(lambda: store, filling, max_entries=max(sizes), similarity=similarity)
    cache = SemanticCache(lambda: store, embedder, max_entries=max(sizes), similarity=similarity)
    rng = random.Random(7)
    bases = [question(rng, 0).rsplit(" case ", 1)[0] for _ in range(pool or 0)]
    params = {"model": "m"}
    stored: list[str] = []
    results = {}
    try:
        for size in sorted(sizes):
            while len(stored) < size:
                index = len(stored)
                text = f"{rng.choice(bases)} case {index}" if bases else question(rng, index)
                filler.put("bench.ask", params, text, {"answer": index})
                stored.append(text)
            samples = []
            served = 0
            for _ in range(lookups):
                probe = rng.choice(stored) + " please"
                start = time.perf_counter()
                hit = cache.lookup("bench.ask", params, probe)
                samples.append((time.perf_counter() - start) * 1000)
                served += hit is not None
            samples.sort()
            results[size] = (
                statistics.median(samples),
                samples[int(len(samples) * 0.99) - 1],
                served / lookups,
            )
    finally:
        store.purge()
    return results


def routing_benchmark(calls: int, rounds: int) -> dict[str, float]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    app = Celery("bench-fallback", broker=f"{REDIS}/11", set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        resilience_store_url=f"{REDIS}/13",
        resilience_key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        resilience_tiers={"standard": {"rate": "1000000/s", "burst": 1000000}},
        resilience_breakers={"open": {}, "closed": {}},
        resilience_prediction={"enabled": False},
    )
    resilience = Resilience(app)

    # The baseline is Celery without the plugin: the plugin sees its own app's plain publishes too.
    plain_app = Celery("bench-plain", broker=f"{REDIS}/11", set_as_current=False)
    plain_app.conf.task_default_queue = queue

    @plain_app.task(name="bench.plain", shared=False)
    def plain() -> None:
        return None

    @app.task(base=AITask, breaker="open", name="bench.routed", fallbacks=["template"], shared=False)
    def routed() -> None:
        return None

    @app.task(base=AITask, breaker="closed", name="bench.direct", fallbacks=["template"], shared=False)
    def direct() -> None:
        return None

    resilience.breakers.force("open", BreakerState.FORCED_OPEN)
    try:
        with app.producer_or_acquire() as producer, plain_app.producer_or_acquire() as plain_producer:
            return measure(
                {
                    "plain Task.apply_async": lambda: plain.apply_async(producer=plain_producer),
                    "AITask, breaker closed": lambda: direct.apply_async(producer=producer),
                    "AITask, breaker open: chain published": lambda: routed.apply_async(producer=producer),
                },
                calls,
                rounds,
            )
    finally:
        redis.Redis.from_url(f"{REDIS}/11").delete(queue)
        resilience.admission.flush_leases()
        resilience.store.purge()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--minilm-lookups", type=int, default=200)
    parser.add_argument("--no-minilm", action="store_true", help="skip the MiniLM extra's lookups")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"fallback benchmark: cache sizes {sizes}, {args.lookups} lookups each\n")
    runs: list[tuple[str, Embedder | None, int | None, float, int]] = [
        ("hashing", None, None, 0.3, args.lookups)
    ]
    runs.append(("wordllama", WordLlamaEmbedder(), None, 0.3, args.lookups))
    if not args.no_minilm:
        runs.append(("minilm", MiniLMEmbedder(), 2000, 0.5, args.minilm_lookups))
    for name, embedder, pool, similarity, lookups in runs:
        for size, (p50, p99, served) in cache_benchmark(sizes, lookups, embedder, pool, similarity).items():
            print(f"  semantic cache, {name:9} {size:>6} entries", end="")
            print(f"   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   served {served:.0%}")
    print()
    for name, embedder, *_ in runs:
        if embedder is not None:
            p50, p99 = embedding_cost(embedder)
            print(f"  embedding one question, {name:9}   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    print()
    routing = routing_benchmark(args.calls, args.rounds)
    for name, seconds in routing.items():
        print(f"  {name:<40} {seconds * 1e6:8.1f} us/publish")
    plain = routing["plain Task.apply_async"]
    routed = routing["AITask, breaker open: chain published"]
    print(f"  routing at enqueue / plain publish        {routed / plain:8.2f}")


if __name__ == "__main__":
    main()
