"""Admission overhead, as ratios measured in one run on the local Redis.

    python benchmarks/admission.py [--calls N] [--rounds R]

1. Publish: ``ResilientTask.apply_async`` / plain ``Task.apply_async`` of an app without
   the plugin, on the same Redis broker (target <= 1.5 with a round trip per publish;
   <= 1.25 aimed for with token leases on hot keys).
2. Decisions per second in one process: our admission (bucket + grace + metric counters
   in one script) against the ``limits`` library's moving-window and
   sliding-window-counter limiters on the same Redis (target: at least as fast as the
   faster), and against a bare EVALSHA of a trivial script (target >= 80 %). Our
   script runs on the store's own lane (``store/script_lane.py``), which skips redis-py's
   generic command path; the bare EVALSHA is measured both through redis-py, as any
   caller runs it, and on the same lane, the floor of one round trip.

Both are measured twice: with a round trip per decision (``resilience_lease_window = 0``)
and with the default token leases, where a hot key (here 100 users at a very high
rate) admits most requests from tokens leased in advance.

Rounds alternate between the contenders and the median round is reported, because the
machine is noisy and absolute times drift; only the ratios are meant to be compared.
Within a round, publishes take turns of ``PUBLISH_TURN`` calls, so that a drift of the
machine's speed within the round slows every contender alike.
"""

from __future__ import annotations

import argparse
import uuid

import redis
from celery import Celery
from limits import RateLimitItemPerSecond, storage, strategies
from timing import measure

from celery_resilience import Resilience, ResilientTask
from celery_resilience.store.redis import RedisStore
from celery_resilience.store.script_lane import ScriptLane

REDIS = "redis://127.0.0.1:6379"
BROKER_DB, STORE_DB = 11, 13


# Publishes per contender's turn within a round (about a third of a second here).
PUBLISH_TURN = 400


def resilient_app(name: str, broker: str, lease_window: float, **conf: object) -> Celery:
    app = Celery(name, broker=broker, set_as_current=False)
    app.conf.update(
        resilience_store_url=f"{REDIS}/{STORE_DB}",
        resilience_key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        # A generous limit: the benchmark measures the admitted path, the common case.
        resilience_tiers={"standard": {"rate": "1000000/s", "burst": 1000000, "grace": 10}},
        resilience_lease_window=lease_window,
        **conf,
    )
    Resilience(app)
    return app


def publish_benchmark(calls: int, rounds: int) -> dict[str, float]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    broker_url = f"{REDIS}/{BROKER_DB}"
    app = resilient_app("bench", broker_url, 0.0, task_default_queue=queue)
    leasing = resilient_app("bench-lease", broker_url, 0.2, task_default_queue=queue)

    # The baseline is Celery without the plugin: the plugin sees its own app's plain publishes too.
    plain_app = Celery("bench-plain", broker=broker_url, set_as_current=False)
    plain_app.conf.task_default_queue = queue

    @plain_app.task(name="bench.plain")
    def plain() -> None:
        return None

    @app.task(base=ResilientTask, name="bench.resilient")
    def resilient() -> None:
        return None

    @leasing.task(base=ResilientTask, name="bench.resilient_leasing")
    def resilient_leasing() -> None:
        return None

    broker = redis.Redis.from_url(f"{REDIS}/{BROKER_DB}")
    users = [f"user-{i}" for i in range(100)]
    try:
        with (
            app.producer_or_acquire() as producer,
            leasing.producer_or_acquire() as lease_producer,
            plain_app.producer_or_acquire() as plain_producer,
        ):
            results = measure(
                {
                    "plain Task.apply_async": lambda i: plain.apply_async(producer=plain_producer),
                    "ResilientTask, round trip each": lambda i: resilient.apply_async(
                        producer=producer, user_id=users[i % 100]
                    ),
                    "ResilientTask, leases": lambda i: resilient_leasing.apply_async(
                        producer=lease_producer, user_id=users[i % 100]
                    ),
                },
                calls,
                rounds,
                with_index=True,
                # The other contenders' turns outlast a lease window: each turn with leases
                # starts with them over, as a process does after a pause in publishing.
                turn=PUBLISH_TURN,
            )
    finally:
        broker.delete(queue)
        Resilience.of(app).store.purge()
        Resilience.of(leasing).admission.flush_leases()
        Resilience.of(leasing).store.purge()
    return results


def decision_benchmark(calls: int, rounds: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    plain = Resilience(resilient_app("bench-decide", "memory://localhost/", 0.0))
    leased = Resilience(resilient_app("bench-decide-lease", "memory://localhost/", 0.2))
    admission, leasing = plain.admission, leased.admission
    store = plain.store
    assert isinstance(store, RedisStore)
    ctx = admission.context("user-1", None, "interactive", None)
    users = [leasing.context(f"user-{i}", None, "interactive", None) for i in range(100)]

    limits_storage = storage.RedisStorage(f"{REDIS}/{STORE_DB}")
    item = RateLimitItemPerSecond(1_000_000)
    moving = strategies.MovingWindowRateLimiter(limits_storage)
    sliding = strategies.SlidingWindowCounterRateLimiter(limits_storage)
    limits_key = f"{prefix}-limits"

    client = redis.Redis.from_url(f"{REDIS}/{STORE_DB}")
    trivial = client.register_script("return 1")
    trivial_lane = ScriptLane(client, "return 1")
    try:
        return measure(
            {
                "bare EVALSHA (return 1)": lambda i: trivial(keys=[f"{prefix}:k"], args=[]),
                "bare EVALSHA, same lane as ours": lambda i: trivial_lane([f"{prefix}:k"], []),
                "limits moving window": lambda i: moving.hit(item, limits_key),
                "limits sliding window counter": lambda i: sliding.hit(item, limits_key),
                "ours, round trip each": lambda i: admission.decide(ctx, task_name="bench"),
                "ours, leases (100 hot users)": lambda i: leasing.decide(users[i % 100], task_name="bench"),
            },
            calls,
            rounds,
            with_index=True,
        )
    finally:
        store.purge()
        leasing.flush_leases()
        leased.store.purge()
        limits_storage.reset()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="calls per contender per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    print(f"admission benchmark: {args.calls} calls x {args.rounds} rounds, median round\n")
    publish = publish_benchmark(args.calls, args.rounds)
    for name, seconds in publish.items():
        print(f"  {name:<34} {seconds * 1e6:8.1f} us/call")
    plain = publish["plain Task.apply_async"]
    print(
        f"  ratio, round trip each / plain     {publish['ResilientTask, round trip each'] / plain:8.2f}"
        "   (target <= 1.5)"
    )
    print(
        f"  ratio, leases / plain              {publish['ResilientTask, leases'] / plain:8.2f}"
        "   (aim <= 1.25)\n"
    )

    decide = decision_benchmark(args.calls, args.rounds)
    for name, seconds in decide.items():
        print(f"  {name:<34} {1 / seconds:8.0f} decisions/s")
    faster_limits = max(1 / decide["limits moving window"], 1 / decide["limits sliding window counter"])
    bare = 1 / decide["bare EVALSHA (return 1)"]
    bare_lane = 1 / decide["bare EVALSHA, same lane as ours"]
    for mode in ("round trip each", "leases (100 hot users)"):
        ours = 1 / decide[f"ours, {mode}"]
        print(f"  ours ({mode}) / faster limits    {ours / faster_limits:8.2f}   (target >= 1.0)")
        print(f"  ours ({mode}) / bare EVALSHA     {ours / bare:8.2f}   (target >= 0.8)")
    ours = 1 / decide["ours, round trip each"]
    print(f"  ours (round trip each) / bare EVALSHA on the same lane {ours / bare_lane:8.2f}   (the floor)")
    print(f"  bare EVALSHA, same lane / through redis-py             {bare_lane / bare:8.2f}")


if __name__ == "__main__":
    main()
