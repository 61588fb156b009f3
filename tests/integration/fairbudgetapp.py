"""An app whose AI tasks call a quick provider over HTTP through a budget of ten calls a
second, shared in fair shares (``fairbudget.ask``) or first come, first served
(``fairbudget.ask_fifo``), or in fair shares of 80 calls in eight seconds
(``fairbudget.ask_wide``) or 20 in two (``fairbudget.ask_many``); enough worker threads
that the budget, not the workers, is what work waits for. Queue and prefix come from the environment."""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("RESILIENCE_TEST_FAIR_BUDGET_QUEUE", "crtest-fair-budget")

app = Celery("fairbudgetapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=os.environ.get("RESILIENCE_TEST_FAIR_BUDGET_PREFIX", "crtest-fair-budget"),
    resilience_tiers={"free": {"rate": "100000/s", "burst": 100000}},
    resilience_default_tier="free",
    resilience_providers={
        "fair": {"requests": "10/s"},
        "fifo": {"requests": "10/s"},
        "wide": {"requests": "80/8s"},
        "many": {"requests": "20/2s"},
    },
    resilience_fair_providers=["fair", "wide", "many"],
    resilience_templates={
        "fairbudget.ask": "busy",
        "fairbudget.ask_fifo": "busy",
        "fairbudget.ask_wide": "busy",
        "fairbudget.ask_many": "busy",
    },
)
Resilience(app)


def _post(url: str, prompt: str) -> Any:
    response = httpx.post(url, json={"prompt": prompt}, timeout=10)
    response.raise_for_status()
    return response.json()


_ai: dict[str, Any] = {"base": AITask, "max_retries": 0, "quota_wait_limit": 1.5, "fallbacks": ["template"]}


@app.task(name="fairbudget.ask", provider="fair", **_ai)
def ask(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(name="fairbudget.ask_wide", provider="wide", **_ai)
def ask_wide(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(name="fairbudget.ask_many", provider="many", **_ai)
def ask_many(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(name="fairbudget.ask_fifo", provider="fifo", **_ai)
def ask_fifo(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(name="fairbudget.ping")
def ping() -> str:
    return "pong"
