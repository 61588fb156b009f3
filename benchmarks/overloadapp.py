"""The Celery app the overload benchmark's worker runs (``BENCH_OVERLOAD_VARIANT``:
``fifo`` and ``expires`` never shed, ``shed`` sheds by sojourn): an AI task calling a
provider over HTTP that takes a fixed time per call, with a template to answer what is
shed. Each finished task leaves when it started, when it finished and how in a Redis
list, for the benchmark to read; a task that expired before it ran leaves when."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import redis
from celery import Celery
from celery.signals import task_postrun, task_prerun, task_revoked

from celery_resilience import AITask, FallbackResult, Resilience, Throttled

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
VARIANT = os.environ.get("BENCH_OVERLOAD_VARIANT", "shed")
TARGET = float(os.environ.get("BENCH_OVERLOAD_TARGET", "0.5"))
INTERVAL = float(os.environ.get("BENCH_OVERLOAD_INTERVAL", "0.5"))
DEADLINE = float(os.environ.get("BENCH_OVERLOAD_DEADLINE", "3"))
QUEUE = f"bench-overload-{VARIANT}"
DONE = f"bench-overload-{VARIANT}:done"

app = Celery("overloadapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=QUEUE,
    resilience_tiers={"free": {"rate": "1000000/s", "burst": 1000000}},
    resilience_default_tier="free",
    resilience_breakers={"provider": {"failure_threshold": 100000}},
    resilience_templates={"bench.ask": "busy", "bench.step": "busy"},
    resilience_shedding={
        "interactive": (
            {"target": TARGET, "interval": INTERVAL, "deadline": DEADLINE} if VARIANT == "shed" else None
        )
    },
)
resilience = Resilience(app)
_client = httpx.Client(timeout=30)
_done = redis.Redis.from_url(f"{REDIS}/12")


@app.task(base=AITask, name="bench.ask", breaker="provider", request_type="interactive", max_retries=0,
          fallbacks=["template"], ignore_result=True)  # fmt: skip
def ask(url: str) -> Any:
    response = _client.post(url, json={"q": "question"})
    response.raise_for_status()
    return response.json()


_started: dict[str, float] = {}


@task_prerun.connect
def _start(task_id: str = "", **_: Any) -> None:
    _started[task_id] = time.time()


@app.task(base=AITask, name="bench.step", breaker="provider", max_retries=0, fallbacks=["template"],
          ignore_result=True)  # fmt: skip
def step(previous: Any, url: str) -> Any:
    """A later step of a chain: another provider call on the previous step's answer."""
    return ask(url)


@task_postrun.connect
def _finished(task: Any = None, task_id: str = "", retval: Any = None, state: str = "", **_: Any) -> None:
    # A chain's first step is shed by failing it with Throttled: no later step runs.
    shed = isinstance(retval, FallbackResult | Throttled)
    root = getattr(getattr(task, "request", None), "root_id", None)
    row = {"id": task_id, "at": time.time(), "shed": shed, "started": _started.pop(task_id, None),
           "root": root, "name": getattr(task, "name", "")}  # fmt: skip
    _done.rpush(DONE, json.dumps(row))


@task_revoked.connect
def _expired(request: Any = None, expired: bool = False, **_: Any) -> None:
    if request is not None and expired:
        _done.rpush(DONE, json.dumps({"id": request.id, "at": time.time(), "shed": False, "expired": True}))
