"""An AI task with a semantic cache that checks every provider answer against it, run by a
real worker. The provider's URL is a task argument, pointing at the test's server."""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_PREFIX", "crtest-cache") + "-cache"
QUEUE = os.environ.get("RESILIENCE_TEST_AI_QUEUE", "crtest-cache") + "-cache"

app = Celery("cacheapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_tiers={"standard": {"rate": "100000/s", "burst": 100000}},
    resilience_breakers={"provider": {"failure_threshold": 100, "minimum_calls": 1, "recovery_timeout": 60}},
    # Every answer the provider gives is judged against what the cache would have served.
    resilience_semantic_cache={"shadow_share": 1.0},
    resilience_templates={"cache.ask": "We will answer {question!r} by email."},
)
Resilience(app)


@app.task(
    base=AITask,
    breaker="provider",
    name="cache.ask",
    max_retries=0,
    cache_prompt="question",
    cache_match=("shop",),
    fallbacks=["cached_similar", "template"],
)
def ask(question: str, url: str, shop: str) -> Any:
    response = httpx.post(url, json={"question": question}, timeout=30)
    response.raise_for_status()
    return response.json()["answer"]


@app.task(name="cache.ping")
def ping() -> str:
    return "pong"
