"""Fallback costs, measured in one run on the local Redis.

    python benchmarks/fallback.py [--sizes 1000,10000,50000] [--lookups N]

1. Semantic cache lookup latency (p50 / p99) with 1k, 10k and 50k cached entries in one
   namespace: candidates from the inverted index in one script, then similarity and the
   quality gate in Python.
2. The added latency of routing at enqueue time: ``AITask.apply_async`` with its breaker
   open (the fallback chain is published instead) against a plain ``Task.apply_async``
   and against the same ``AITask`` with its breaker closed, on the same Redis broker.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

import redis
from celery import Celery
from timing import measure

from celery_resilience import AITask, BreakerState, Resilience
from celery_resilience.fallbacks.cache import SemanticCache
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


def question(rng: random.Random, index: int) -> str:
    return (
        f"{rng.choice(ACTIONS)} the {rng.choice(SUBJECTS)} {rng.choice(SUBJECTS)} {rng.choice(DETAILS)} "
        f"case {index}"
    )


def cache_benchmark(sizes: list[int], lookups: int) -> dict[int, tuple[float, float, float]]:
    """Size -> (p50 ms, p99 ms, share of lookups served)."""
    store = RedisStore(f"{REDIS}/13", KeySpace(f"bench-{uuid.uuid4().hex[:8]}", 16))
    cache = SemanticCache(lambda: store, max_entries=max(sizes))
    rng = random.Random(7)
    params = {"model": "m"}
    stored: list[str] = []
    results = {}
    try:
        for size in sorted(sizes):
            while len(stored) < size:
                text = question(rng, len(stored))
                cache.put("bench.ask", params, text, {"answer": len(stored)})
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

    @app.task(name="bench.plain", shared=False)
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
        with app.producer_or_acquire() as producer:
            return measure(
                {
                    "plain Task.apply_async": lambda: plain.apply_async(producer=producer),
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
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"fallback benchmark: cache sizes {sizes}, {args.lookups} lookups each\n")
    for size, (p50, p99, served) in cache_benchmark(sizes, args.lookups).items():
        print(f"  semantic cache, {size:>6} entries   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms", end="")
        print(f"   served {served:.0%}")
    print()
    routing = routing_benchmark(args.calls, args.rounds)
    for name, seconds in routing.items():
        print(f"  {name:<40} {seconds * 1e6:8.1f} us/publish")
    plain = routing["plain Task.apply_async"]
    routed = routing["AITask, breaker open: chain published"]
    print(f"  routing at enqueue / plain publish        {routed / plain:8.2f}")


if __name__ == "__main__":
    main()
