"""The runtime of fair queues (``load/fairness.py``): at enqueue, when to ask the store
for a tenant's delay; on the worker, the service rate it reports.

A publish to a fair queue asks the store only while the queue is saturated: its depth
(probed at most every ``resilience_depth_interval``, never per publish) at or above the
queue's ``depth``, or work this process held back not yet due (the broker does not count
held-back work as ready, so a depth that falls because fairness holds work back must not
end the fair order while that work is waiting). Otherwise the publish costs one
dictionary lookup. A store that cannot be reached leaves the queue FIFO, never a
publish refused.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import StoreUnavailable
from .fairness import FairPolicy
from .port import FairStore

__all__ = ["FairQueues", "REPORT_INTERVAL"]

logger = logging.getLogger("celery_resilience.fairness")

# A worker process reports its service rate of a queue at most this often (seconds).
REPORT_INTERVAL = 1.0


class FairQueues:
    """Fair queues for one app: ``delay`` at enqueue, ``served`` on the worker."""

    def __init__(
        self,
        policies: Mapping[str, FairPolicy],
        store: Callable[[], FairStore],
        depth: Callable[[str], int | None] | None,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.policies = policies
        self._store = store
        self._depth = depth  # QueueDepths.depth: the broker's count, cached
        self._monotonic = clock.monotonic
        self._held_until: dict[str, float] = {}
        self._lowest_first: bool | None = None  # the broker's priority order, once known
        # Worker side: the slots of this process (a thread pool's threads; a prefork child
        # is one), and per queue the tasks finished and their seconds since the last report.
        self.slots = 1
        self._served: dict[str, tuple[int, float]] = {}
        self._reported_at = -1e18
        self._lock = threading.Lock()

    def saturated(self, queue: str) -> bool:
        """Whether ``queue`` publishes in fair order now (False for a queue not fair)."""
        policy = self.policies.get(queue)
        if policy is None:
            return False
        if self._monotonic() < self._held_until.get(queue, -1.0):
            return True
        depth = self.ready(queue)
        return depth is not None and depth >= policy.depth

    def ready(self, queue: str) -> int | None:
        """The ready messages of ``queue`` as last probed (None: not known)."""
        return self._depth(queue) if self._depth is not None else None

    def delay(self, queue: str, tenant: str | None, weight: float, cost: Callable[[], float]) -> float:
        """Seconds to hold back a publish of ``tenant`` to ``queue``; ``cost`` is asked only
        when the queue is saturated (an AI task's tokens take a tokenizer to count)."""
        if not self.saturated(queue):
            return 0.0
        policy = self.policies[queue]
        try:
            tag = self._store().fair_tag(queue, tenant, weight, cost(), policy.max_delay, policy.capacity)
        except StoreUnavailable as error:
            logger.debug("fair order of %r skipped, the store did not answer: %s", queue, error)
            return 0.0
        if tag.delay > 0 and policy.order == "delay":
            until = self._monotonic() + tag.delay
            if until > self._held_until.get(queue, -1.0):
                self._held_until[queue] = until
        return tag.delay

    def message_priority(self, app: Any, level: int) -> int:
        """The message priority of a fair level (0 first) on the app's broker: Redis serves
        its lowest number first (steps 0, 3, 6, 9), RabbitMQ its highest (a queue declared
        with ``x-max-priority`` of 9 or more)."""
        if self._lowest_first is None:
            driver = getattr(app.connection_for_write().transport, "driver_type", "")
            self._lowest_first = driver != "amqp"
        return 3 * level if self._lowest_first else 9 - 3 * level

    def served(self, queue: str, seconds: float) -> None:
        """A task of ``queue`` ran for ``seconds`` in this process; its service rate (slots
        over the mean duration) goes to the store at most every ``REPORT_INTERVAL``."""
        if queue not in self.policies:
            return
        with self._lock:
            tasks, total = self._served.get(queue, (0, 0.0))
            self._served[queue] = (tasks + 1, total + max(seconds, 1e-6))
            now = self._monotonic()
            if now - self._reported_at < REPORT_INTERVAL:
                return
            self._reported_at = now
            due, self._served = self._served, {}
        reporter = f"{socket.gethostname()}:{os.getpid()}"
        for name, (tasks, total) in due.items():
            try:
                self._store().fair_capacity(name, reporter, self.slots * tasks / total)
            except StoreUnavailable as error:
                logger.debug("service rate of %r not reported: %s", name, error)
