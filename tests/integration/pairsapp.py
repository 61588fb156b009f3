"""The documented path for a cached answer, run by a real worker: an ``AITask`` naming its
prompt (``cache_prompt``) with ``fallbacks=["cached_similar"]``, and ``shadow_share`` 0 so
that the gate alone decides what a new entry serves. The provider's URL and the namespace
(``tenant``, a ``cache_match`` parameter) are task arguments; the embedder is the default
unless ``RESILIENCE_TEST_EMBEDDER`` names an extra's."""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_PREFIX", "crtest-pairs") + "-pairs"
QUEUE = os.environ.get("RESILIENCE_TEST_AI_QUEUE", "crtest-pairs") + "-pairs"

app = Celery("pairsapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_tiers={"standard": {"rate": "100000/s", "burst": 100000}},
    resilience_breakers={"provider": {"failure_threshold": 100, "minimum_calls": 1, "recovery_timeout": 60}},
    resilience_semantic_cache={
        "shadow_share": 0.0,
        **({"embedder": EMBEDDER} if (EMBEDDER := os.environ.get("RESILIENCE_TEST_EMBEDDER")) else {}),
    },
)
Resilience(app)


@app.task(
    base=AITask,
    breaker="provider",
    name="pairs.ask",
    max_retries=0,
    cache_prompt="question",
    cache_match=("tenant",),
    fallbacks=["cached_similar"],
)
def ask(question: str, url: str, tenant: str) -> Any:
    response = httpx.post(url, json={"question": question}, timeout=30)
    response.raise_for_status()
    return response.json()["answer"]


@app.task(name="pairs.ping")
def ping() -> str:
    return "pong"
