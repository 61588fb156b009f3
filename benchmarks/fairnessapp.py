"""The Celery app the fairness benchmark's worker runs (``BENCH_FAIR_VARIANT``: ``fifo``
leaves the queue first come, first served; ``fair`` and ``split`` name it in
``resilience_fair_queues``): a task that takes a fixed time. Each finished task leaves
its tenant and when it finished in a Redis list, for the benchmark to read.

The ``budget-*`` variants run ``bench.ask`` instead: an ``AITask`` whose calls draw on a
provider budget of ``BUDGET`` (the bottleneck: the worker has threads to spare), with a
template to answer what waits past ``quota_wait_limit``. ``budget-fifo`` leaves the
budget first come, first served; ``budget-fair`` and ``budget-split`` name it in
``resilience_fair_providers``. Only calls the budget let through reach the list."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun

from celery_resilience import AITask, Resilience, ResilientTask

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
VARIANT = os.environ.get("BENCH_FAIR_VARIANT", "fair")
ORDERS = {"priority": "priority"}  # the other fair variants keep the order by delay
SERVICE = float(os.environ.get("BENCH_FAIR_SERVICE", "0.1"))
DEPTH = int(os.environ.get("BENCH_FAIR_DEPTH", "20"))
BUDGET = os.environ.get("BENCH_FAIR_BUDGET", "100/5s")
WAIT_LIMIT = float(os.environ.get("BENCH_FAIR_WAIT_LIMIT", "2"))
QUEUE = f"bench-fair-{VARIANT}"
DONE = f"bench-fair-{VARIANT}:done"

app = Celery("fairnessapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    task_ignore_result=not VARIANT.startswith("budget"),  # a budget's callers read their answers
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=QUEUE,
    resilience_tiers={"standard": {"rate": "1000000/s", "burst": 1000000}},
    resilience_providers={"bench": {"requests": BUDGET}},
    resilience_templates={"bench.ask": "busy"},
    **(
        {}
        if VARIANT in ("fifo", "budget-fifo")
        else {"resilience_fair_providers": ["bench"]}
        if VARIANT.startswith("budget")
        else {"resilience_fair_queues": {QUEUE: {"depth": DEPTH, "order": ORDERS.get(VARIANT, "delay")}}}
    ),
)
resilience = Resilience(app)
_done = redis.Redis.from_url(f"{REDIS}/12")


@app.task(base=ResilientTask, name="bench.work", ignore_result=True)
def work(tenant: str) -> None:
    time.sleep(SERVICE)


@app.task(
    base=AITask, name="bench.ask", provider="bench", max_retries=0, quota_wait_limit=WAIT_LIMIT,
    fallbacks=["template"], ignore_result=False,
)  # fmt: skip
def ask(tenant: str) -> str:
    time.sleep(0.02)  # the provider's answer
    return "provider"


@task_postrun.connect
def _finished(task_id: str = "", args: Any = None, **_: Any) -> None:
    _done.rpush(DONE, json.dumps({"id": task_id, "tenant": (args or ["?"])[0], "at": time.time()}))
