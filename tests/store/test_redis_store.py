"""Behaviour only the Redis store has: scripts, server time, key layout, outages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from celery_resilience.bucket import BucketSpec, Decision
from celery_resilience.errors import StoreUnavailable
from celery_resilience.keys import KeySpace, escape_part
from celery_resilience.store.base import AdmitPolicy, AdmitRequest
from celery_resilience.store.redis import RedisStore
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
    sha = live_store._admit.sha
    assert live_store.client.script_exists(sha) == [True]
    live_store.client.script_flush()
    assert live_store.admit(req(keys)).decision is Decision.ALLOW


def test_without_an_injected_clock_the_server_time_is_used(live_store: RedisStore, keys: KeySpace) -> None:
    """Decisions use Redis TIME, so every host agrees on the bucket's clock."""
    server_now = live_store.now()
    live_store.admit(req(keys))
    stamp = float(live_store.client.get(keys.bucket("u")[0]).split()[1])
    assert server_now <= stamp <= server_now + 5


def test_a_refused_server_surfaces_as_store_unavailable(keys: KeySpace) -> None:
    """Nothing listening: StoreUnavailable, not a redis-py exception."""
    store = RedisStore("redis://127.0.0.1:1/0", keys, timeout=0.2)
    with pytest.raises(StoreUnavailable):
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

    from celery_resilience.admission import warn_if_evicting

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
        client.config_set("maxmemory-policy", original)
