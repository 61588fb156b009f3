"""Which Redis a store URL names, and a client for it: one server, a Cluster, or the master
that Sentinel names.

The URLs follow the ``limits`` library's convention, which Python users of Redis-backed
limiters know:

- ``redis://[user:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path``: one server;
- ``redis+cluster://[user:password@]host:port[,host:port...]``: a Cluster, discovered from
  any of the nodes named (``rediss+cluster://`` over TLS);
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``: the master of
  ``service``, found through any of the sentinels named, and found again after a
  failover (``rediss+sentinel://`` over TLS, to the sentinels too, with the same ``ssl_*``
  options unless ``sentinel_kwargs`` says otherwise). The password in the URL is the
  master's; ``resilience_store_options["sentinel_kwargs"]`` carries the sentinels' own.

``resilience_store_options`` are passed to every connection (``password``,
``ssl_ca_certs``, ``socket_keepalive``...), after the store's own timeouts, which they
may override.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel

__all__ = ["Topology", "SCHEMES", "LazyCluster", "parse_store_url", "connect", "unreachable"]

SERVER, CLUSTER, SENTINEL = "server", "cluster", "sentinel"
SCHEMES = {
    "redis": SERVER,
    "rediss": SERVER,
    "unix": SERVER,
    "redis+cluster": CLUSTER,
    "rediss+cluster": CLUSTER,
    "redis+sentinel": SENTINEL,
    "rediss+sentinel": SENTINEL,
}
_DEFAULT_PORTS = {CLUSTER: 6379, SENTINEL: 26379}


@dataclass(frozen=True)
class Topology:
    """What a store URL names."""

    kind: str  # SERVER, CLUSTER or SENTINEL
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


def parse_store_url(url: str) -> Topology:
    """The topology ``url`` names; ``ValueError`` saying what was expected otherwise."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = SCHEMES.get(scheme)
    if kind is None:
        raise ValueError(f"a URL starting {', '.join(s + '://' for s in SCHEMES)} or memory://")
    if kind == SERVER:
        return Topology(SERVER, url)
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    nodes = tuple(_node(item, _DEFAULT_PORTS[kind]) for item in hosts.split(",") if item)
    if not nodes:
        raise ValueError(f"at least one host:port after {scheme}://")
    path = [piece for piece in parts.path.split("/") if piece]
    service, db = "", 0
    if kind == SENTINEL:
        if not path:
            raise ValueError(f"{scheme}://host:port[,host:port]/service: the service's name after the hosts")
        service = unquote(path[0])
        db = _db(path[1]) if len(path) > 1 else 0
    elif path:
        raise ValueError(f"{scheme}://host:port[,host:port] with no path: a Cluster has no databases")
    return Topology(
        kind,
        url,
        nodes,
        service,
        db,
        unquote(username) or None,
        unquote(password) or None,
        scheme.startswith("rediss"),
    )


def _node(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
    if not host:
        raise ValueError(f"host:port pairs, not {item!r}")
    try:
        return host.strip("[]"), int(port) if port else default_port
    except ValueError:
        raise ValueError(f"host:port pairs with a numeric port, not {item!r}") from None


def _db(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"a database number after the service, not {text!r}") from None


def connect(topology: Topology, timeout: float, options: Mapping[str, Any] | None = None) -> Any:
    """A client for the topology: ``redis.Redis`` (one server, or Sentinel's master, found
    again on every reconnection) or ``RedisCluster``. Short timeouts: a store that does not
    answer must cost a caller a fraction of a second."""
    settings: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry_on_timeout": False,
        "health_check_interval": 30,
    }
    if topology.username is not None:
        settings["username"] = topology.username
    if topology.password is not None:
        settings["password"] = topology.password
    if topology.tls:
        settings["ssl"] = True
    settings.update(options or {})
    if topology.kind == SERVER:  # rediss:// says TLS itself
        return redis.Redis.from_url(topology.url, **settings)
    if topology.kind == CLUSTER:
        settings.pop("health_check_interval", None)
        settings.pop("retry_on_timeout", None)  # the Cluster client's own retries decide
        nodes = [ClusterNode(host, port) for host, port in topology.nodes]  # type: ignore[no-untyped-call]
        # A failover moves slots: follow them (refreshing the slot map) instead of failing.
        settings.setdefault("cluster_error_retry_attempts", 1)
        return LazyCluster(lambda: RedisCluster(startup_nodes=nodes, **settings))
    sentinel_kwargs = dict(settings.pop("sentinel_kwargs", None) or {})
    if topology.tls:
        # rediss+sentinel://: the sentinels speak TLS too, trusting what the servers are trusted
        # by, unless sentinel_kwargs says otherwise ({"ssl": False} for plain sentinels).
        for name, value in settings.items():
            if name == "ssl" or name.startswith("ssl_"):
                sentinel_kwargs.setdefault(name, value)
    sentinel_kwargs.setdefault("socket_timeout", timeout)
    sentinel_kwargs.setdefault("socket_connect_timeout", timeout)
    # Typed from redis-py 8.2 on, untyped before: held as Any so that both type-check.
    sentinel_class: Any = Sentinel
    sentinels = sentinel_class(list(topology.nodes), sentinel_kwargs=sentinel_kwargs, **settings)
    return sentinels.master_for(topology.service, db=topology.db)


def unreachable(url: str, timeout: float, options: Mapping[str, Any] | None = None) -> str | None:
    """Why the Redis at ``url`` does not answer a PING now, or None when it does (a client
    of its own, closed at once: nothing is shared with a process forked later)."""
    try:
        client = connect(parse_store_url(url), timeout, options)
    except (redis.RedisError, RedisClusterException) as error:  # a Cluster is discovered at once
        return str(error) or type(error).__name__
    try:
        client.ping()
    except (redis.RedisError, RedisClusterException) as error:
        return str(error) or type(error).__name__
    finally:
        client.close()
    return None


class LazyCluster:
    """A Cluster client made at its first command, not when the store is built: redis-py's
    client contacts the nodes as it is made, and a Cluster down when the app starts is a
    store outage like any other (each call fails with ``StoreUnavailable`` until it
    answers), not an error wherever the store is first touched. Every attribute is a
    method deferred to the real client; scripts register without it."""

    def __init__(self, make: Callable[[], RedisCluster]) -> None:
        self._make = make
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def real(self) -> RedisCluster:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def register_script(self, source: str) -> Script:
        return Script(self, source)  # type: ignore[arg-type]

    def get_encoder(self) -> Any:
        """The encoding a registered script's text is hashed in: redis-py's default, from a
        client that never connects."""
        return redis.Redis().get_encoder()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def deferred(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.real(), name)(*args, **kwargs)

        return deferred
