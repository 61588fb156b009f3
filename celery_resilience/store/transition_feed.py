"""The breaker transition feed on Redis: every process hears every transition at once.

``breaker.lua`` announces ``"<name> <state> <generation> <open_until>"`` with each
transition; one daemon thread per store follows the announcements for the life of the
process, reconnecting after errors, and hands each event to the listeners. An
interruption is announced as ``(None, None)``: caches fed by the announcements may be
stale.

Where they go: on one server (and behind Sentinel) one channel for the whole key space.
On a Cluster whose servers have sharded pub/sub (Redis 7), each breaker has a channel in
its own slot (``SPUBLISH``): an announcement stays on the shard that made it instead of
crossing the whole Cluster's bus, and the feed follows the channels of the breakers its
listeners named, one connection per node holding any of them (its own connections, not
redis-py's cluster pub/sub, whose reading and resubscribing differ between releases).
When a slot moves, the node gives up the subscription (``sunsubscribe``); the feed then
reads the slot map again and follows the channel on its new owner.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from ..breakers.machine import BreakerState, BreakerView
from ..breakers.port import TransitionListener
from ..errors import StoreUnavailable

__all__ = ["TransitionFeed", "Sharding"]

logger = logging.getLogger("celery_resilience.store")

_STATES = {s.value: s for s in BreakerState}
# How long a read waits on each node holding a followed channel before trying the next,
# when there are several (a read waits on one connection): the worst delay before an
# event on another node is heard.
_SHARD_POLL_SECONDS = 0.05


class _Resubscribe(Exception):
    """A node gave up a subscription (its slot moved): follow the channel again."""


@dataclass(frozen=True)
class Sharding:
    """How a Cluster announces transitions: whether its servers have sharded pub/sub
    (asked of the store once), each breaker's channel, and how to read the slot map again."""

    available: Callable[[], bool]
    channel: Callable[[str], str]
    refresh_slots: Callable[[], None]


class TransitionFeed:
    def __init__(self, client: Any, channel: str, sharding: Sharding | None = None) -> None:
        self._client = client
        self._channel = channel
        self._sharding = sharding
        self._listeners: list[TransitionListener] = []
        self._breakers: set[str] = set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._breakers_added = threading.Event()
        self._retry_delay = 0.1

    def subscribe(self, listener: TransitionListener, breakers: Iterable[str]) -> None:
        """Hand ``listener`` every transition; ``breakers`` are those it needs, which is
        all a feed on sharded channels follows."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)
            added = set(breakers) - self._breakers
            if added:
                self._breakers |= added
                self._breakers_added.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen, name="resilience-breaker-events", daemon=True
                )
                self._thread.start()

    def _listen(self) -> None:
        while not self._closed.is_set():
            pubsub = None
            try:
                sharding = self._sharding
                if sharding is not None and sharding.available():
                    self._follow_shards(sharding)
                else:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    self._follow_channel(pubsub)
            # Besides redis errors, a connection torn down under the reader (a failover, a
            # client closed) surfaces from the socket as OSError or ValueError, or from
            # redis-py's parser, whose buffer is gone once another thread disconnected it
            # mid-read, as AttributeError: the feed must outlive all of them.
            except (
                redis.RedisError, RedisClusterException, StoreUnavailable, OSError, ValueError,
                AttributeError, _Resubscribe,
            ) as error:  # fmt: skip
                if self._closed.is_set():
                    return
                self._interrupted(error)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def _interrupted(self, error: Exception) -> None:
        """Tell the listeners their caches may be stale, then wait before following again
        (at once when a moved slot is all there is to follow)."""
        for listener in list(self._listeners):
            listener(None, None)
        if self._sharding is not None:
            with contextlib.suppress(Exception):  # otherwise read again with the next call
                self._sharding.refresh_slots()
        if isinstance(error, _Resubscribe):
            return
        delay = self._retry_delay
        logger.warning("breaker event feed interrupted (%s); retrying in %.1fs", error, delay)
        self._closed.wait(delay)
        self._retry_delay = min(delay * 2, 5.0)

    def _follow_channel(self, pubsub: Any) -> None:
        pubsub.subscribe(self._channel)
        self._retry_delay = 0.1
        while not self._closed.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message is not None:
                self._deliver(message["data"])

    def _follow_shards(self, sharding: Sharding) -> None:
        """Follow each named breaker's channel on the node holding its slot (a connection of
        its own per node), until closed or a node gives one up."""
        by_node: dict[str, Any] = {}
        following: set[str] = set()
        try:
            while not self._closed.is_set():
                if self._breakers_added.is_set() or not following:
                    self._breakers_added.clear()
                    with self._lock:
                        wanted = self._breakers - following
                    for name in sorted(wanted):
                        channel = sharding.channel(name)
                        node = self._client.get_node_from_key(channel)
                        pubsub = by_node.get(node.name)
                        if pubsub is None:
                            pubsub = by_node[node.name] = self._client.get_redis_connection(node).pubsub()
                        pubsub.ssubscribe(channel)
                    following |= wanted
                    self._retry_delay = 0.1
                if not following:
                    self._breakers_added.wait(1.0)  # no breaker named yet: nothing to follow
                    continue
                # One node: wait on it. Several: each in turn, briefly (a read waits on one).
                timeout = 1.0 if len(by_node) == 1 else _SHARD_POLL_SECONDS
                for pubsub in list(by_node.values()):
                    message = pubsub.get_message(timeout=timeout)
                    if message is None:
                        continue
                    if message["type"] == "smessage":
                        self._deliver(message["data"])
                    elif message["type"] == "sunsubscribe":
                        raise _Resubscribe()
        finally:
            for pubsub in by_node.values():
                with contextlib.suppress(Exception):
                    pubsub.close()

    def close(self) -> None:
        """Stop following the announcements (within a second): the store is closed."""
        self._closed.set()
        self._breakers_added.set()

    def _deliver(self, data: bytes) -> None:
        try:
            name, state, generation, open_until = data.decode().split()
            event = BreakerView(_STATES[state], int(generation), float(open_until))
        except (ValueError, KeyError):
            logger.warning("ignored a malformed breaker event: %r", data)
            return
        for listener in list(self._listeners):
            listener(name, event)
