"""Queue depth, probed through kombu and cached per process.

Every kombu transport can say how many ready messages a queue holds:
- on RabbitMQ, a passive ``queue_declare`` gives the broker's own count;
- on Redis, kombu's virtual channel sums the queue's list and its priority sub-lists,
  honouring ``global_keyprefix`` and ``priority_steps``;
- on the memory transport it is the in-process queue.

A queue that does not exist yet is empty. What no transport reports: tasks with an ETA
or countdown and tasks already prefetched by workers (on Redis they wait in the
``unacked`` hash). A transport that cannot count is warned about once, and
backpressure is off for it.

Each queue is probed at most once per ``interval`` per process, never once per publish.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery

from ..clock import SYSTEM_CLOCK, Clock

__all__ = ["QueueDepths"]

logger = logging.getLogger("celery_resilience.backpressure")


class QueueDepths:
    def __init__(
        self,
        app: Celery,
        interval: float = 0.3,
        *,
        timeout: float = 1.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._app = app
        self._interval = interval
        self._timeout = timeout
        self._monotonic = clock.monotonic
        self._cache: dict[str, tuple[float, int | None]] = {}
        self._lock = threading.Lock()
        self._connection: Any = None
        self._channel: Any = None
        self._pid = os.getpid()
        self._unsupported = False
        self._warned_down_at = -1e9
        self.probes = 0

    def depth(self, queue: str) -> int | None:
        """Ready messages in ``queue``; None when the broker cannot tell (or cannot be reached)."""
        cached = self._cache.get(queue)
        now = self._monotonic()
        if cached is not None and now - cached[0] < self._interval:
            return cached[1]
        with self._lock:
            cached = self._cache.get(queue)
            if cached is not None and now - cached[0] < self._interval:
                return cached[1]
            depth = self._probe(queue)
            self._cache[queue] = (self._monotonic(), depth)
            return depth

    def close(self) -> None:
        with self._lock:
            self._reset()

    def _probe(self, queue: str) -> int | None:
        if self._unsupported:
            return None
        if os.getpid() != self._pid:  # a forked child must not share its parent's socket
            self._connection = self._channel = None
            self._pid = os.getpid()
        self.probes += 1
        connection = self._connection
        try:
            if connection is None:
                connection = self._connection = self._app.connection_for_read(connect_timeout=self._timeout)
            if self._channel is None:
                self._channel = connection.channel()
            size = getattr(self._channel, "_size", None)
            if size is not None:
                # kombu's virtual transports (Redis, memory, ...): the count a passive declare
                # would report, read directly, because that declare first checks existence
                # without the global_keyprefix and calls a prefixed queue missing.
                return int(size(queue))
            return int(self._channel.queue_declare(queue=queue, passive=True).message_count)
        except NotImplementedError:
            self._unsupported = True
            logger.warning(
                "the %s transport cannot report queue depth: queue-depth backpressure is off",
                getattr(connection, "transport_cls", "broker"),
            )
            return None
        except Exception as error:
            if connection is not None and isinstance(error, connection.channel_errors):
                self._channel = None  # AMQP closes the channel on a missing queue
                return 0
            if self._monotonic() - self._warned_down_at > 60:
                self._warned_down_at = self._monotonic()
                logger.warning("could not read the depth of queue %r: %s", queue, error)
            self._reset()
            return None

    def _reset(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception as error:  # closing a broken connection may fail in many ways
                logger.debug("closing the depth probe's connection: %s", error)
        self._connection = self._channel = None
