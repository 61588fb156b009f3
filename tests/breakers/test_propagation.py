"""A trip in one process reaches every other process, which then refuses without a round trip,
on one server, a Cluster (on the breaker's own shard), behind Sentinel, and each of them over TLS."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from celery_resilience.breakers.classification import Classifier
from celery_resilience.breakers.client import Breakers
from celery_resilience.breakers.machine import BreakerPolicy, BreakerState
from celery_resilience.errors import CircuitOpen
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore
from tests.conftest import TOPOLOGIES, topology_store
from tests.topologies import Cluster

POLICY = BreakerPolicy(failure_threshold=4, minimum_calls=1, recovery_timeout=60, jitter=0)


def client(url: str, prefix: str, options: dict[str, str]) -> tuple[RedisStore, Breakers]:
    store = RedisStore(url, KeySpace(prefix, 4), timeout=2.0, options=options)
    return store, Breakers({"seen": POLICY}, lambda: store, Classifier.default())


def _watch(url: str, prefix: str, options: dict[str, str], ready: Any, results: Any) -> None:
    _, breakers = client(url, prefix, options)
    breakers.acquire("seen")  # learns CLOSED, and subscribes to transitions
    ready.put(True)
    deadline = time.monotonic() + 10
    while breakers.stats["transitions_heard"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    results.put(("feed", 0.0, 0))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cached = breakers._cache.get("seen")
        if cached is not None and cached.view.state is BreakerState.OPEN:
            seen_at = time.time()
            try:
                breakers.acquire("seen")
            except CircuitOpen:
                results.put(("seen", seen_at, breakers.stats["refused_locally"]))
                return
        time.sleep(0.001)
    results.put(("missed", 0.0, 0))


@pytest.mark.parametrize("topology", ["redis", *TOPOLOGIES])
def test_a_trip_in_one_process_is_seen_by_four_others(
    request: pytest.FixtureRequest, topology: str, prefix: str
) -> None:
    """Four processes hear the trip over pub/sub and refuse locally (no store round trip)."""
    url, options = topology_store(request, topology)
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_watch, args=(url, prefix, options, ready, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    store, breakers = client(url, prefix, options)
    try:
        for _ in procs:
            ready.get(timeout=60)
        # The feeds connect asynchronously: toggle a harmless transition until all four hear it.
        feeds = 0
        deadline = time.monotonic() + 20
        while feeds < 4 and time.monotonic() < deadline:
            breakers.force("seen", BreakerState.CLOSED)
            while not results.empty() and feeds < 4:
                feeds += results.get()[0] == "feed"
            time.sleep(0.05)
        assert feeds == 4
        # The four watchers and this process, whose breakers follow the channel too.
        if topology.endswith("cluster"):
            assert_announced_on_the_breakers_shard(request.getfixturevalue(TOPOLOGIES[topology]), store, 5)
        elif topology == "cluster-redis6":  # no sharded pub/sub: the key space's channel
            nodes = request.getfixturevalue(TOPOLOGIES[topology]).primaries()
            assert sum(node.followers(store.keys.breaker_channel(), sharded=False) for node in nodes) == 5
        tripped_at = time.time()
        while breakers.read("seen").state is BreakerState.CLOSED:
            breakers.record(breakers.acquire("seen"), TimeoutError())
        reports = [results.get(timeout=30) for _ in procs]
        assert all(kind == "seen" for kind, *_ in reports), reports
        assert all(refused >= 1 for _, _, refused in reports)
        assert max(seen for _, seen, _ in reports) - tripped_at < 5
    finally:
        for proc in procs:
            proc.join(timeout=30)
        store.purge()
        store.close()


def assert_announced_on_the_breakers_shard(cluster: Cluster, store: RedisStore, followers: int) -> None:
    """The processes follow the breaker's sharded channel on the node holding its slot, and
    nobody follows the key space's broadcast channel."""
    channel = store.keys.breaker_shard_channel("seen")
    owner = cluster.node_for(channel)
    assert owner.followers(channel, sharded=True) == followers
    assert owner.port == cluster.node_for(store.keys.breaker("seen")[0]).port
    for node in cluster.primaries():
        assert node.followers(store.keys.breaker_channel(), sharded=False) == 0
