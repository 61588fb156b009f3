"""Breaker overhead and trip propagation, measured in one run on the local Redis.

    python benchmarks/breaker.py [--calls N] [--rounds R] [--trips T]

1. Per-call overhead of a guarded no-op call, CLOSED and OPEN, against an unguarded
   call and against ``pybreaker`` with its ``CircuitRedisStorage`` on the same Redis
   (target: at least 2x faster than pybreaker when CLOSED; no round trip when OPEN,
   counted with the server's own command counter). CLOSED successes are reported in
   batches; a failing call (reported at once, one round trip) is measured apart.
2. Time for a transition to reach four other processes over pub/sub (target p99 <= 100 ms),
   on the local Redis (one channel) and on a three-primary Cluster started here (each
   breaker's sharded channel, followed on the node holding its slot).

Rounds alternate between contenders and the median round is reported: only the
ratios are meant to be compared, the machine is noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pybreaker
import redis
from timing import measure

from celery_resilience.breakers.classification import Classifier
from celery_resilience.breakers.client import Breakers
from celery_resilience.breakers.machine import BreakerPolicy, BreakerState
from celery_resilience.errors import CircuitOpen
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.topologies: the test run's servers
from tests.topologies import Cluster

URL = "redis://127.0.0.1:6379/13"
POLICY = BreakerPolicy(failure_threshold=5, minimum_calls=1, recovery_timeout=3600, jitter=0)


def noop() -> None:
    return None


def overhead(calls: int, rounds: int) -> tuple[dict[str, float], int]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = RedisStore(URL, KeySpace(prefix, 4))
    never_trips = BreakerPolicy(failure_threshold=1e12, minimum_calls=1, recovery_timeout=3600, jitter=0)
    ours = Breakers(
        {"closed": POLICY, "open": POLICY, "failing": never_trips}, lambda: store, Classifier.default()
    )
    ours.force("open", BreakerState.FORCED_OPEN)
    client = redis.Redis.from_url(URL)
    closed_py = pybreaker.CircuitBreaker(
        fail_max=5,
        reset_timeout=3600,
        state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=f"{prefix}-c"),
    )
    open_py = pybreaker.CircuitBreaker(
        fail_max=5,
        reset_timeout=3600,
        state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_OPEN, client, namespace=f"{prefix}-o"),
    )
    open_py.open()
    failing_py = pybreaker.CircuitBreaker(
        fail_max=10**12,
        reset_timeout=3600,
        state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=f"{prefix}-f"),
    )

    def fail() -> None:
        raise TimeoutError

    def ours_failing() -> None:
        with contextlib.suppress(TimeoutError), ours.guard("failing"):
            fail()

    def py_failing() -> None:
        with contextlib.suppress(TimeoutError):
            failing_py.call(fail)

    def ours_closed() -> None:
        with ours.guard("closed"):
            noop()

    def ours_open() -> None:
        with contextlib.suppress(CircuitOpen), ours.guard("open"):
            noop()

    def py_open() -> None:
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            open_py.call(noop)

    try:
        results = measure(
            {
                "unguarded call": noop,
                "celery-resilience CLOSED": ours_closed,
                "pybreaker (Redis storage) CLOSED": lambda: closed_py.call(noop),
                "celery-resilience OPEN": ours_open,
                "pybreaker (Redis storage) OPEN": py_open,
                "celery-resilience CLOSED, failing": ours_failing,
                "pybreaker (Redis storage) CLOSED, failing": py_failing,
            },
            calls,
            rounds,
        )
        before = int(client.info("stats")["total_commands_processed"])
        for _ in range(calls):
            ours_open()
        # The INFO call itself is one command.
        round_trips_when_open = int(client.info("stats")["total_commands_processed"]) - before - 1
    finally:
        store.purge()
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    return results, round_trips_when_open


def _listen(url: str, prefix: str, ready: Any, heard: Any, count: int) -> None:
    store = RedisStore(url, KeySpace(prefix, 4), timeout=2.0)
    times: dict[int, float] = {}

    def on_event(name: str | None, view: Any) -> None:
        if name == "seen" and view is not None:
            times.setdefault(view.generation, time.time())

    store.subscribe(on_event, ["seen"])
    ready.put(True)
    deadline = time.monotonic() + 60
    while len(times) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    heard.put(times)


def propagation(url: str, trips: int) -> list[float]:
    """Milliseconds from a transition's reply to its arrival in each of four processes."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    ready, heard = ctx.Queue(), ctx.Queue()
    warmup = 20
    procs = [ctx.Process(target=_listen, args=(url, prefix, ready, heard, trips + warmup)) for _ in range(4)]
    for proc in procs:
        proc.start()
    store = RedisStore(url, KeySpace(prefix, 4))
    sent: dict[int, float] = {}
    try:
        for _ in procs:
            ready.get(timeout=60)
        states = [BreakerState.FORCED_OPEN, BreakerState.CLOSED]
        for index in range(trips + warmup):
            before = time.time()
            view = store.breaker_force("seen", POLICY, states[index % 2])
            if index >= warmup:  # the first events may arrive before every subscription is live
                sent[view.generation] = before
            time.sleep(0.02)
        latencies = []
        for _ in procs:
            times = heard.get(timeout=90)
            latencies.extend((times[g] - t) * 1000 for g, t in sent.items() if g in times)
        return latencies
    finally:
        for proc in procs:
            proc.join(timeout=30)
        store.purge()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--trips", type=int, default=100)
    args = parser.parse_args()

    print(f"breaker benchmark: {args.calls} calls x {args.rounds} rounds, median round\n")
    results, open_round_trips = overhead(args.calls, args.rounds)
    for name, seconds in results.items():
        print(f"  {name:<36} {seconds * 1e6:8.1f} us/call")
    closed = results["pybreaker (Redis storage) CLOSED"] / results["celery-resilience CLOSED"]
    opened = results["pybreaker (Redis storage) OPEN"] / results["celery-resilience OPEN"]
    print(f"  pybreaker / ours, CLOSED             {closed:8.2f}x   (target >= 2)")
    print(f"  pybreaker / ours, OPEN               {opened:8.2f}x")
    failing = (
        results["pybreaker (Redis storage) CLOSED, failing"] / results["celery-resilience CLOSED, failing"]
    )
    print(f"  pybreaker / ours, CLOSED failing     {failing:8.2f}x   (each failure is one round trip)")
    # A process re-reads a cached state every 2 s (closed_cache_seconds) whatever the calls:
    # a refresh that falls in the loop costs one script and the commands it runs.
    print(
        f"  store commands for {args.calls} OPEN calls    {open_round_trips:8d}"
        "     (target: none per call; one refresh of the cached state every 2 s)\n"
    )

    report_propagation("one server, one channel", propagation(URL, args.trips))
    cluster = Cluster()
    try:
        cluster.start()
        report_propagation("Cluster, sharded channel", propagation(cluster.url, args.trips))
    finally:
        cluster.stop()


def report_propagation(where: str, latencies: list[float]) -> None:
    latencies = sorted(latencies)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"  transition reaching 4 processes ({where}): {len(latencies)} samples, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms   (target p99 <= 100 ms)"
    )


if __name__ == "__main__":
    main()
