"""An app whose AI task calls a slow provider through one worker thread, with shedding
targets short enough for a test; queue and prefix come from the environment."""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("RESILIENCE_TEST_SHED_QUEUE", "crtest-shed")

app = Celery("shedapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=os.environ.get("RESILIENCE_TEST_SHED_PREFIX", "crtest-shed"),
    resilience_tiers={"free": {"rate": "100000/s", "burst": 100000}},
    resilience_default_tier="free",
    resilience_breakers={"provider": {"failure_threshold": 1000}},
    resilience_shedding={"interactive": {"target": 0.2, "interval": 0.5, "deadline": 1.0}},
    resilience_templates={"shed.ask": "Busy: {prompt}"},
)
Resilience(app)


def _post(url: str, prompt: str) -> Any:
    response = httpx.post(url, json={"prompt": prompt}, timeout=10)
    response.raise_for_status()
    return response.json()


@app.task(
    base=AITask, name="shed.ask", breaker="provider", request_type="interactive", max_retries=0,
    fallbacks=["template"],
)  # fmt: skip
def ask(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(base=AITask, name="shed.ask_alone", breaker="provider", request_type="interactive", max_retries=0)
def ask_alone(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(name="shed.ping")
def ping() -> str:
    return "pong"


@app.task(base=AITask, name="shed.step", breaker="provider", request_type="interactive", max_retries=0)
def step(previous: Any, url: str) -> Any:
    return {"after": previous, **_post(url, "next step")}
