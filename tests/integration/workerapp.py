"""The Celery app the integration tests run in real worker processes.

Configured from the environment so each test session gets its own queue and key
prefix on the local Redis (broker db 11, results db 12, store db 13).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

from celery_resilience import Resilience, ResilientTask

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_PREFIX", "crtest-integration")
QUEUE = os.environ.get("RESILIENCE_TEST_QUEUE", "crtest-integration")

app = Celery("workerapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_tiers={
        "free": {"rate": "60/m", "burst": 1, "grace": 0},
        "pro": {"rate": "600/m", "burst": 3, "grace": 2},
        # No refill within a test: what it spent stays spent, however slow the worker.
        "slow": {"rate": "1/h", "burst": 1},
    },
    resilience_default_tier="free",
    resilience_request_types={
        "interactive": "critical",
        "batch": "sheddable",
        "queued": "sheddable_plus",
        "default": "sheddable_plus",
    },
    # Publishes by name (a web service without the task code) of this task are admitted.
    resilience_gated_tasks={"tests.integration.workerapp.context_of": {"request_type": "interactive"}},
    resilience_throttle_strategies=[
        {"request_type": "batch", "strategy": "reject_with_backoff", "seconds": 30},
        {"request_type": "queued", "strategy": "queue_with_timeout", "seconds": 0.5},
        {"strategy": "delay", "seconds": 1},
    ],
)
Resilience(app)

_signals = redis.Redis.from_url(f"{REDIS}/13")


@app.task(base=ResilientTask, bind=True, request_type="interactive")
def whoami(self: ResilientTask) -> dict[str, Any]:
    """Reports what the worker saw: the caller's context, and when it ran versus its ETA."""
    return {"context": self.resilience_context, "eta": self.request.eta, "ran_at": time.time()}


@app.task(base=ResilientTask, bind=True)
def context_of(self: ResilientTask, *previous: Any) -> dict[str, Any]:
    """A chain step, callback or errback reporting the caller it ran for."""
    return {"user_id": self.resilience_context["user_id"], "context": self.resilience_context}


@app.task(base=ResilientTask, bind=True)
def remember_context(self: ResilientTask, failed_id: str, key: str) -> None:
    """An errback (called with the failed task's id): records the caller it ran for."""
    _signals.set(key, json.dumps(self.resilience_context), ex=60)


@app.task(base=ResilientTask)
def fail() -> None:
    raise ValueError("this task always fails")


@app.task(base=ResilientTask, bind=True, request_type="batch", max_retries=3)
def flaky(self: ResilientTask, failures: int) -> str:
    """Fails ``failures`` times, retrying at once each time."""
    if self.request.retries < failures:
        raise self.retry(countdown=0)
    return f"ok after {self.request.retries} retries"


@app.task(base=ResilientTask, request_type="batch")
def add(x: int, y: int) -> int:
    return x + y


@app.task(base=ResilientTask, request_type="batch")
def fan_out(count: int, other_user: str | None = None) -> list[str]:
    """Publishes ``count`` children (for no user, or for ``other_user``); returns their ids."""
    return [whoami.apply_async(user_id=other_user).id for _ in range(count)]


@app.task(base=ResilientTask, request_type="batch")
def total(values: list[int]) -> int:
    return sum(values)


@app.task
def block(flag: str, seconds: float = 30.0) -> bool:
    """Occupies a worker slot until ``flag`` is set in the store's database (or the deadline)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _signals.exists(flag):
            return True
        time.sleep(0.02)
    return False


@app.task
def ping() -> str:
    return "pong"
