"""An app with two fair queues (order by delay, order by priority) and one FIFO queue,
served by one worker thread, whose task takes a fixed time and leaves its tenant, finish
time, fair delay, whether it finished before its hold ended, and message priority in a
Redis list."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

import redis
from celery import Celery
from celery.signals import task_postrun

from celery_resilience import Resilience, ResilientTask

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_PREFIX", "crtest-fair")
FAIR = f"{PREFIX}-fair"
FIFO = f"{PREFIX}-fifo"
PRIO = f"{PREFIX}-prio"
DONE = f"{PREFIX}-fair:done"
SERVICE = 0.05

app = Celery("fairapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=FAIR,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=f"{PREFIX}-fairness",
    resilience_tiers={"free": {"rate": "100000/s", "burst": 100000}},
    resilience_default_tier="free",
    # Saturated from five ready messages; the service rate is learned from the worker.
    resilience_fair_queues={FAIR: {"depth": 5}, PRIO: {"depth": 5, "order": "priority"}},
    resilience_depth_interval=0.05,
)
resilience = Resilience(app)
_done = redis.Redis.from_url(f"{REDIS}/12")


@app.task(base=ResilientTask, name="fair.work", bind=True)
def work(self: Any, label: str) -> str:
    time.sleep(SERVICE)
    return label


@task_postrun.connect
def _finished(task: Any = None, task_id: str = "", args: Any = None, **_: Any) -> None:
    context = getattr(task.request, "resilience", None) or {}
    eta, at = task.request.eta, time.time()
    row = {"id": task_id, "label": (args or ["?"])[0], "at": at, "tenant": context.get("tenant"),
           "fair_delay": context.get("fair_delay"), "eta": eta,
           "early": eta is not None and at < datetime.fromisoformat(eta).timestamp(),
           "priority": (task.request.delivery_info or {}).get("priority")}  # fmt: skip
    _done.rpush(DONE, json.dumps(row))
