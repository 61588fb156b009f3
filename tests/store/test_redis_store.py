"""Behaviour only the Redis store has: scripts, server time, key layout, outages."""

from __future__ import annotations

import contextlib
import queue
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celery_resilience.admission.bucket import BucketSpec, Decision
from celery_resilience.admission.port import AdmitPolicy, AdmitRequest
from celery_resilience.breakers.machine import BreakerState, BreakerView
from celery_resilience.errors import StoreUnavailable
from celery_resilience.store.keys import KeySpace, escape_part
from celery_resilience.store.redis import RedisStore
from celery_resilience.store.transition_feed import TransitionFeed
from tests.conftest import store_url

SPEC = BucketSpec(capacity=2, refill=1.0, grace_limit=0, grace_period=60)


def req(keys: KeySpace, scope: str = "u") -> AdmitRequest:
    key, shard = keys.bucket(scope)
    return AdmitRequest(key, shard, AdmitPolicy(SPEC, tier="free", strategy="delay"))


@pytest.fixture
def live_store(redis_available: None, keys: KeySpace) -> Iterator[RedisStore]:
    store = RedisStore(store_url(), keys)
    yield store
    store.purge()
    store.close()


def test_keys_live_under_the_prefix_with_hash_tags_and_expire(live_store: RedisStore, keys: KeySpace) -> None:
    """Every key the admission writes is under the prefix, hash-tagged, and has a TTL."""
    live_store.admit(req(keys, escape_part("user:1")))
    client = live_store.client
    found = sorted(k.decode() for k in client.scan_iter(match=keys.pattern()))
    assert len(found) == 2
    for key in found:
        assert key.startswith(f"{keys.prefix}:{{s")
        assert client.pttl(key) > 0
    assert any(key.endswith(":bucket:user%3A1") for key in found)


def test_script_runs_by_sha_and_survives_a_script_flush(live_store: RedisStore, keys: KeySpace) -> None:
    """The script is cached server-side; after SCRIPT FLUSH it is reloaded transparently."""
    live_store.admit(req(keys))
    sha = live_store._admission._admit.sha
    assert live_store.client.script_exists(sha) == [True]
    live_store.client.script_flush()
    assert live_store.admit(req(keys)).decision is Decision.ALLOW


def test_renewals_pipelined_with_an_admission_survive_a_script_flush(
    live_store: RedisStore, keys: KeySpace
) -> None:
    """Several admissions written at once after SCRIPT FLUSH: the script is reloaded, every one decided."""
    live_store.client.script_flush()
    many = [req(keys, f"u{index}") for index in range(3)]
    outcomes = live_store.admit_many(many)
    assert [o.decision if o else None for o in outcomes] == [Decision.ALLOW] * 3
    assert live_store.metrics()["admitted"] == 3


def test_without_an_injected_clock_the_server_time_is_used(live_store: RedisStore, keys: KeySpace) -> None:
    """Decisions use Redis TIME, so every host agrees on the bucket's clock."""
    server_now = live_store.now()
    live_store.admit(req(keys))
    stored = live_store.client.get(keys.bucket("u")[0])
    assert isinstance(stored, bytes)
    stamp = float(stored.split()[1])
    assert server_now <= stamp <= server_now + 5


def test_a_refused_server_surfaces_as_store_unavailable(keys: KeySpace) -> None:
    """Nothing listening: StoreUnavailable, not a redis-py exception."""
    store = RedisStore("redis://127.0.0.1:1/0", keys, timeout=0.2)
    with pytest.raises(StoreUnavailable):
        store.admit(req(keys))


def test_a_closed_store_does_not_connect_again(redis_available: None, keys: KeySpace) -> None:
    """After close, a call (leases reported at exit, say) is StoreUnavailable, not a new connection."""
    store = RedisStore(store_url(), keys, timeout=0.2)
    store.count({"admitted:free": 1}, 0)
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.count({"admitted:free": 1}, 0)
    with pytest.raises(StoreUnavailable, match="closed"):
        store.admit(req(keys))


def test_a_hung_server_times_out_as_store_unavailable(silent_server: int, keys: KeySpace) -> None:
    """A server that never replies costs one socket timeout and raises StoreUnavailable."""
    store = RedisStore(f"redis://127.0.0.1:{silent_server}/0", keys, timeout=0.2)
    with pytest.raises(StoreUnavailable, match="did not answer"):
        store.admit(req(keys))


def test_a_read_only_or_refusing_server_is_unavailable_too(live_store: RedisStore, keys: KeySpace) -> None:
    """Server-side refusals (here: a key of the wrong type) are StoreUnavailable, never a crash."""
    key, _ = keys.bucket("u")
    live_store.client.hset(key, "not", "a string")
    with pytest.raises(StoreUnavailable, match="refused"):
        live_store.admit(req(keys))


def test_redis_errors_are_redis_errors() -> None:
    """Sanity: the client library raises what the store translates."""
    assert issubclass(redis.TimeoutError, redis.RedisError)


def test_the_server_clock_is_read_once_then_followed_locally(live_store: RedisStore, keys: KeySpace) -> None:
    """After one TIME (or any reply carrying the server's time), now() costs no round trip for a while."""
    stats_before = live_store.client.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
    readings = [live_store.now() for _ in range(20)]
    stats_after = live_store.client.info("commandstats").get("cmdstat_time", {}).get("calls", 0)
    assert stats_after - stats_before <= 1
    assert readings == sorted(readings)


def test_an_evicting_redis_is_warned_about(live_store: RedisStore, caplog: pytest.LogCaptureFixture) -> None:
    """With an eviction policy, buckets and breakers could vanish silently: say so at start-up."""
    import logging

    from celery_resilience.admission.gate import warn_if_evicting

    client = live_store.client
    original = client.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        client.config_set("maxmemory-policy", "allkeys-lru")
        with caplog.at_level(logging.WARNING, "celery_resilience"):
            assert warn_if_evicting(live_store)
        assert "allkeys-lru" in caplog.text
        client.config_set("maxmemory-policy", "noeviction")
        assert not warn_if_evicting(live_store)
    finally:
        client.config_set("maxmemory-policy", original or "noeviction")


def test_a_connection_the_server_dropped_is_replaced_without_failing_the_call(
    live_store: RedisStore, keys: KeySpace
) -> None:
    """A pooled connection killed while idle is replaced, and the admission call succeeds."""
    live_store.admit(req(keys))
    admin = redis.Redis.from_url(store_url())
    try:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        assert live_store.admit(req(keys)).decision is Decision.ALLOW
    finally:
        admin.close()


def test_a_connection_dropped_just_before_the_command_is_retried_once(
    live_store: RedisStore, keys: KeySpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection dropped after the pool's check is reconnected and the command run once more."""
    live_store.admit(req(keys))
    admin = redis.Redis.from_url(store_url())
    pool = live_store.client.connection_pool
    checked_out = pool.get_connection

    def checked_then_dropped(*args: Any, **kwargs: Any) -> Any:
        connection = checked_out(*args, **kwargs)
        port = connection._sock.getsockname()[1]
        admin.client_kill(f"127.0.0.1:{port}")
        return connection

    monkeypatch.setattr(pool, "get_connection", checked_then_dropped)
    try:
        assert live_store.admit(req(keys)).decision is Decision.ALLOW
    finally:
        admin.close()


def test_a_timed_out_call_never_hands_its_late_reply_to_the_next_call(
    live_store: RedisStore, keys: KeySpace
) -> None:
    """A call timed out by a paused server never hands its late reply to the next call."""
    roomy_key, roomy_shard = keys.bucket("roomy")
    roomy = AdmitRequest(roomy_key, roomy_shard, AdmitPolicy(BucketSpec(9, 1.0, 0, 60), "free", "delay"))
    live_store.admit(req(keys))  # the lane now holds a connected connection
    admin = redis.Redis.from_url(store_url(), socket_timeout=5)
    try:
        admin.execute_command("CLIENT", "PAUSE", 600, "ALL")  # type: ignore[no-untyped-call]
        with pytest.raises(StoreUnavailable, match="did not answer"):
            live_store.admit(roomy)
        admin.ping()  # answered once the pause is over; the late reply has been sent by now
        outcome = live_store.admit(req(keys, "other"))
    finally:
        admin.close()
    assert outcome.remaining == pytest.approx(1.0, abs=0.01)  # capacity 2, one taken: not roomy's 8


class _TornOnce:
    """A client whose first subscription fails as redis-py's parser does when another
    thread disconnected the connection mid-read (its buffer gone)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.torn = False

    def pubsub(self, **options: Any) -> Any:
        opener: Any = self.client.pubsub  # typed from redis-py 8.2 on: Any for every release
        pubsub = opener(**options)
        if not self.torn:
            self.torn = True

            def torn(*channels: Any) -> None:
                raise AttributeError("'NoneType' object has no attribute 'readline'")

            pubsub.subscribe = torn
        return pubsub


def test_the_breaker_feed_outlives_a_read_torn_by_another_thread(redis_available: None) -> None:
    """After a torn read the feed warns its listeners their cache may be stale, follows again, delivers."""
    client = redis.Redis.from_url(store_url())
    channel = f"crtest-feed-{uuid.uuid4().hex}"
    feed = TransitionFeed(_TornOnce(client), channel)
    heard: queue.Queue[tuple[str | None, BreakerView | None]] = queue.Queue()
    feed.subscribe(lambda name, view: heard.put((name, view)), ["openai"])
    try:
        assert heard.get(timeout=5) == (None, None)
        deadline = time.monotonic() + 10
        event: tuple[str | None, BreakerView | None] | None = None
        while event is None and time.monotonic() < deadline:
            client.publish(channel, "openai open 3 0")  # the feed subscribes in its own time
            with contextlib.suppress(queue.Empty):
                event = heard.get(timeout=0.2)
        assert event == ("openai", BreakerView(BreakerState.OPEN, 3, 0.0))
    finally:
        feed.close()
        client.close()
