"""The breaker transition feed on Redis: every process hears every transition at once.

``breaker.lua`` publishes ``"<name> <state> <generation> <open_until>"`` on the key
space's channel with each transition; one daemon thread per store follows the channel
for the life of the process, reconnecting after errors, and hands each event to the
listeners. An interruption is announced as ``(None, None)``: caches fed by the channel
may be stale.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from ..breakers.machine import BreakerState, BreakerView
from ..breakers.port import TransitionListener

__all__ = ["TransitionFeed"]

logger = logging.getLogger("celery_resilience.store")

_STATES = {s.value: s for s in BreakerState}


class TransitionFeed:
    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._listeners: list[TransitionListener] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def subscribe(self, listener: TransitionListener) -> None:
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen, name="resilience-breaker-events", daemon=True
                )
                self._thread.start()

    def _listen(self) -> None:
        delay = 0.1
        while not self._closed.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._channel)
                delay = 0.1
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._deliver(message["data"])
            # Besides redis errors, a connection torn down under the reader (a failover, a
            # client closed) surfaces from the socket as OSError or ValueError: the feed
            # must outlive all of them.
            except (redis.RedisError, RedisClusterException, OSError, ValueError) as error:
                if self._closed.is_set():
                    return
                logger.warning("breaker event feed interrupted (%s); retrying in %.1fs", error, delay)
                for listener in list(self._listeners):
                    listener(None, None)
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def close(self) -> None:
        """Stop following the channel (within a second): the store is closed."""
        self._closed.set()

    def _deliver(self, data: bytes) -> None:
        try:
            name, state, generation, open_until = data.decode().split()
            event = BreakerView(_STATES[state], int(generation), float(open_until))
        except (ValueError, KeyError):
            logger.warning("ignored a malformed breaker event: %r", data)
            return
        for listener in list(self._listeners):
            listener(name, event)
