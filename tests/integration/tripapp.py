"""An AI pipeline whose provider fails over HTTP, run by two worker processes that share a
breaker, a store and a Sentry project (a local ingestion endpoint). The app starts Sentry
itself, with the SDK's default integrations and Celery's, as most Celery users do."""

from __future__ import annotations

import os
from typing import Any

import httpx
import sentry_sdk
from celery import Celery
from sentry_sdk.integrations.celery import CeleryIntegration

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_TRIP_PREFIX", "crtest-trip")
QUEUE = os.environ.get("RESILIENCE_TEST_TRIP_QUEUE", "crtest-trip")

app = Celery("tripapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_tiers={"standard": {"rate": "100000/s", "burst": 100000}},
    # Two 500s (2 x 2.5) trip it; it then stays open for the whole test.
    resilience_breakers={
        "provider": {"failure_threshold": 5, "minimum_calls": 2, "recovery_timeout": 300, "jitter": 0}
    },
    resilience_templates={"trip.ask": "Sorry, no answer to {prompt!r} right now."},
    # The monitor ticks often: were it to send the trip again, the test would see it.
    resilience_alert_interval=0.3,
    resilience_monitor_lease=1.5,
)
Resilience(app)
sentry_sdk.init(dsn=os.environ.get("RESILIENCE_TEST_SENTRY_DSN"), integrations=[CeleryIntegration()])


@app.task(
    base=AITask,
    breaker="provider",
    name="trip.ask",
    max_retries=0,
    fallbacks=["trip.rules", "template"],
)
def ask(prompt: str, url: str) -> Any:
    response = httpx.post(url, json={"prompt": prompt}, timeout=10)
    response.raise_for_status()
    return response.json()


@app.task(name="trip.rules")
def rules(prompt: str, url: str) -> Any:
    """Keyword rules: they know urgent requests, nothing else."""
    if "urgent" not in prompt:
        raise LookupError("no rule matches")
    return {"label": "urgent"}


@app.task(name="trip.ping")
def ping() -> str:
    return "pong"
