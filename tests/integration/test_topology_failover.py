"""Failover on a real Redis Cluster and behind real Sentinel (plain and over TLS), under a stream
of publishes.

The node holding a hot user's bucket (or Sentinel's master) is killed while several
threads publish for that user. Publishes go on (the store-outage policy: fail open), every
task published is in the broker, what admission did without the store is counted, and
once the topology has settled admission holds the user to the limit again.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from celery import Celery

from celery_resilience import Resilience, ResilientTask, Throttled
from celery_resilience.admission.bucket import BucketSpec
from celery_resilience.admission.port import AdmitPolicy, AdmitRequest
from celery_resilience.breakers.machine import BreakerPolicy, BreakerState, BreakerView
from celery_resilience.cli import status_report
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore
from tests.conftest import REDIS_URL
from tests.topologies import Cluster, SentinelGroup, wait_until

pytestmark = pytest.mark.integration

# Low enough that even a slow machine publishes past it within a second.
RATE, BURST, GRACE = 20, 10, 2
LEASE_WINDOW = 0.2


@dataclass
class Stream:
    """Publishes for one user from several threads until stopped, each outcome counted."""

    task: Any
    user: str
    published: list[str] = field(default_factory=list)
    throttled: int = 0
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                task_id = self.task.apply_async(user_id=self.user).id
            except Throttled:
                with self.lock:
                    self.throttled += 1
                time.sleep(0.001)
                continue
            except BaseException as error:  # a lost publish: the test fails on it
                self.errors.append(error)
                return
            with self.lock:
                self.published.append(task_id)

    def count(self) -> int:
        with self.lock:
            return len(self.published)


def make_app(store_url: str, options: dict[str, str] | None = None) -> tuple[Celery, Any, str]:
    queue = f"crtest-failover-{uuid.uuid4().hex[:8]}"
    app = Celery("failover", broker=f"{REDIS_URL}/11", set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        resilience_store_url=store_url,
        resilience_store_options=options or {},
        resilience_key_prefix=f"crtest-{uuid.uuid4().hex[:8]}",
        resilience_tiers={"standard": {"rate": f"{RATE}/s", "burst": BURST, "grace": GRACE}},
        resilience_default_tier="standard",
        resilience_store_retry_interval=0.5,
        resilience_lease_window=LEASE_WINDOW,
        resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 0}],
    )
    Resilience(app)

    @app.task(base=ResilientTask, name="failover.work", shared=False)
    def work() -> None:
        return None

    return app, work, queue


def queued_ids(queue: str) -> list[str]:
    broker = redis.Redis.from_url(f"{REDIS_URL}/11")
    try:
        return [json.loads(raw)["headers"]["id"] for raw in broker.lrange(queue, 0, -1)]
    finally:
        broker.delete(queue)


def bound(started: float, stopped: float) -> float:
    """The documented bound over a wall-clock span: the rate over it and one lease window,
    the burst, and the grace of every grace window it touches (the rate's period, 1 s)."""
    windows = math.floor(stopped) - math.floor(started) + 1
    return RATE * (stopped - started + LEASE_WINDOW) + BURST + GRACE * windows


def admitted_in_a_burst(task: Any, user: str, seconds: float) -> tuple[int, int, float]:
    """Publish as fast as possible for ``seconds``: (admitted, throttled, the bound over them)."""
    admitted = throttled = 0
    started = time.time()
    while time.time() - started < seconds:
        try:
            task.apply_async(user_id=user)
            admitted += 1
        except Throttled:
            throttled += 1
    return admitted, throttled, bound(started, time.time())


def fail_over_under_publishes(
    app: Celery, task: Any, queue: str, kill: Callable[[], None], settle: Callable[[], None]
) -> None:
    """Kill, settle, and check that nothing was lost and admission holds again."""
    stream = Stream(task, "hot-user")
    threads = [threading.Thread(target=stream.run) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: stream.count() >= 50, 30, "publishes before the failover")
        kill()
        before_settled = stream.count()
        settle()
        wait_until(lambda: stream.count() >= before_settled + 50, 30, "publishes after the failover")
    finally:
        stream.stop.set()
        for thread in threads:
            thread.join(30)
    assert stream.errors == []
    resilience = Resilience.of(app)
    assert resilience.admission.stats["store_unavailable"] > 0  # the gap was bridged, fail open

    # Nothing lost: every task published is in the broker, and only those.
    assert sorted(queued_ids(queue)) == sorted(stream.published)

    # Admission holds again: a new user gets at most the documented bound.
    def store_decides() -> bool:
        """Past the store retry interval, a publish is decided by the store again."""
        before = resilience.admission.stats["store_unavailable"]
        task.apply_async(user_id="probe-user")
        return resilience.admission.stats["store_unavailable"] == before

    wait_until(store_decides, 10, "admission asking the store again")
    unchecked = resilience.admission.stats["store_unavailable"]
    admitted, throttled, most = admitted_in_a_burst(task, "after-user", 1.0)
    assert throttled > 0 and admitted <= most, (admitted, throttled, most)
    assert resilience.admission.stats["store_unavailable"] == unchecked  # decided by the store
    # What admission did without the store reached the metrics once it answered again.
    report = status_report(app)
    skipped = sum(report[m]["store_unavailable"] for m in ("this_minute", "last_minute"))
    assert skipped > 0
    redis.Redis.from_url(f"{REDIS_URL}/11").delete(queue)  # the probes and the burst


def rejoined(cluster: Cluster) -> None:
    for server in cluster.servers:  # a killed node rejoins, as a replica
        if not server.running:
            server.start()
    cluster.wait_settled()


@pytest.fixture
def cluster(redis_cluster: Cluster) -> Iterator[Cluster]:
    yield redis_cluster
    rejoined(redis_cluster)


@pytest.fixture(params=["redis_cluster", "redis_tls_cluster"], ids=["plain", "tls"])
def any_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    cluster: Cluster = request.getfixturevalue(request.param)
    yield cluster
    rejoined(cluster)


@pytest.fixture(params=["redis_sentinel", "redis_tls_sentinel"], ids=["plain", "tls"])
def sentinel(request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    group: SentinelGroup = request.getfixturevalue(request.param)
    yield group
    for server in (group.primary, group.replica):
        if not server.running:
            server.start()  # Sentinel makes the old master a replica of the new one
    wait_until(lambda: group.replicas_in_sync() >= 1, 30, "the old master back as a replica")


def test_the_cluster_node_holding_a_users_bucket_dies_under_publishes(any_cluster: Cluster) -> None:
    """Kill the primary of the hot user's slot: publishes go on, none is lost, admission holds after."""
    app, task, queue = make_app(any_cluster.url, any_cluster.options)
    resilience = Resilience.of(app)
    key, _ = resilience.store.user_bucket("hot-user", "standard", None)
    holder = any_cluster.node_for(key)
    try:
        fail_over_under_publishes(app, task, queue, holder.kill, any_cluster.wait_settled)
    finally:
        resilience.store.close()
    assert any_cluster.node_for(key).port != holder.port


def test_the_sentinel_master_dies_under_publishes(sentinel: SentinelGroup) -> None:
    """Kill Sentinel's master: publishes go on, none is lost, admission holds on the promoted replica."""
    app, task, queue = make_app(sentinel.url, sentinel.options)
    old = sentinel.master_port()

    def promoted() -> None:
        wait_until(lambda: sentinel.master_port() != old, 30, "the replica promoted")

    try:
        fail_over_under_publishes(app, task, queue, sentinel.master().kill, promoted)
    finally:
        Resilience.of(app).store.close()
    assert sentinel.master_port() != old


def script_calls(server: Any) -> int:
    """EVALSHA calls the server has answered (MOVED and ASK replies count as failed ones)."""
    stats = server.client().info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)) - int(stats.get("failed_calls", 0))


def test_the_cluster_moves_a_users_slot_under_publishes(cluster: Cluster) -> None:
    """Reshard the hot user's slot mid-stream: none lost, the bucket moves along, admission follows."""
    app, task, queue = make_app(cluster.url)
    resilience = Resilience.of(app)
    key, _ = resilience.store.user_bucket("hot-user", "standard", None)
    source = cluster.node_for(key)
    target = next(server for server in cluster.primaries() if server is not source)
    stream = Stream(task, "hot-user")
    threads = [threading.Thread(target=stream.run) for _ in range(4)]
    started = time.time()
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: stream.throttled >= 20, 30, "the hot user held to its limit")
        cluster.move_slot(key, target)
        moved = stream.count()
        wait_until(lambda: stream.count() >= moved + 20, 30, "publishes after the move")
    finally:
        stream.stop.set()
        for thread in threads:
            thread.join(30)
    stopped = time.time()
    assert stream.errors == []
    assert sorted(queued_ids(queue)) == sorted(stream.published)
    # A move is no outage: every publish was decided by the store, redirected where the
    # slot went, and the bucket moved with it (the user got no fresh burst).
    assert resilience.admission.stats["store_unavailable"] == 0
    assert stream.count() <= bound(started, stopped)
    # Admission follows the move: the new owner answers, the old one hears nothing more.
    before_source, before_target = script_calls(source), script_calls(target)
    _, throttled, _ = admitted_in_a_burst(task, "hot-user", 0.5)
    assert throttled > 0
    assert script_calls(source) == before_source
    assert script_calls(target) > before_target
    resilience.store.close()
    redis.Redis.from_url(f"{REDIS_URL}/11").delete(queue)


def test_renewals_riding_on_one_round_trip_follow_a_moved_slot(cluster: Cluster) -> None:
    """A renewal whose slot moved since the client read the map is answered by its new owner."""
    app, _, queue = make_app(cluster.url)
    store = Resilience.of(app).store
    spec = BucketSpec(capacity=50, refill=20.0, grace_limit=0, grace_period=60)
    policy = AdmitPolicy(spec, tier="standard", strategy="reject_with_backoff")
    by_node: dict[int, tuple[str, int]] = {}
    for index in range(200):
        key, shard = store.user_bucket(f"user-{index}", "standard", None)
        by_node.setdefault(cluster.node_for(key).port, (key, shard))
        if len(by_node) == 2:
            break
    (rider, rider_shard), (moving, moving_shard) = list(by_node.values())[:2]
    for key, shard in ((rider, rider_shard), (moving, moving_shard)):
        store.admit(AdmitRequest(key, shard, policy))  # the client reads the map, the buckets exist
    target = next(
        s for s in cluster.primaries() if s.port not in (cluster.node_for(k).port for k in (rider, moving))
    )
    cluster.move_slot(moving, target)
    before = script_calls(target)
    outcomes = store.admit_many(
        [
            AdmitRequest(rider, rider_shard, policy),
            AdmitRequest(moving, moving_shard, policy, lease=3, pending=2, renew=True),
        ]
    )
    assert [o.leased if o else None for o in outcomes] == [0, 3]
    assert script_calls(target) == before + 1
    store.close()
    redis.Redis.from_url(f"{REDIS_URL}/11").delete(queue)


@pytest.mark.parametrize("change", ["slot moved", "primary killed"])
def test_a_breakers_announcements_follow_its_slot(cluster: Cluster, change: str) -> None:
    """A process following a breaker's sharded channel follows the slot's new owner and hears what follows."""
    keys = KeySpace(f"t-{uuid.uuid4().hex[:8]}", 4)
    watcher, actor = RedisStore(cluster.url, keys, timeout=2.0), RedisStore(cluster.url, keys, timeout=2.0)
    heard: list[tuple[str | None, BreakerView | None]] = []
    watcher.subscribe(lambda name, view: heard.append((name, view)), ["seen"])
    policy = BreakerPolicy(failure_threshold=1, minimum_calls=1, recovery_timeout=60, jitter=0)

    def hears(state: BreakerState) -> Callable[[], bool]:
        def heard_it() -> bool:
            actor.breaker_force("seen", policy, state)
            return any(view is not None and view.state is state for _, view in heard[-3:])

        return heard_it

    try:
        wait_until(hears(BreakerState.FORCED_OPEN), 10, "the watcher following the breaker")
        channel = keys.breaker_shard_channel("seen")
        source = cluster.node_for(channel)
        heard.clear()
        if change == "slot moved":
            target = next(s for s in cluster.primaries() if s.port != source.port)
            cluster.move_slot(channel, target)
        else:
            source.kill()
            cluster.wait_settled()
            target = cluster.node_for(channel)
        wait_until(hears(BreakerState.CLOSED), 20, "the watcher following the breaker's new owner")
        assert (None, None) in heard  # an interruption: nothing cached from the feed is trusted
        assert target.followers(channel, sharded=True) == 1
        if source.running:
            assert source.followers(channel, sharded=True) == 0
    finally:
        actor.purge()
        watcher.close()
        actor.close()


def test_a_redis_6_cluster_announces_on_the_broadcast_channel(redis6_cluster: Cluster) -> None:
    """On a Redis 6.2 Cluster (no sharded pub/sub), transitions go over PUBLISH and are heard."""
    cluster = redis6_cluster
    keys = KeySpace(f"t-{uuid.uuid4().hex[:8]}", 4)
    watcher, actor = RedisStore(cluster.url, keys, timeout=2.0), RedisStore(cluster.url, keys, timeout=2.0)
    heard: list[tuple[str | None, BreakerView | None]] = []
    watcher.subscribe(lambda name, view: heard.append((name, view)), ["seen"])
    policy = BreakerPolicy(failure_threshold=1, minimum_calls=1, recovery_timeout=60, jitter=0)

    def heard_it() -> bool:
        actor.breaker_force("seen", policy, BreakerState.FORCED_OPEN)
        return any(name == "seen" and view is not None for name, view in heard)

    try:
        wait_until(heard_it, 10, "the watcher following the broadcast channel")
        nodes = [node for node in cluster.servers if node.running]
        assert all(node.client().info("server")["redis_version"].startswith("6.") for node in nodes)
        assert sum(node.followers(keys.breaker_channel(), sharded=False) for node in nodes) == 1
    finally:
        actor.purge()
        watcher.close()
        actor.close()
