"""An app whose interactive AI task answers refusals from the cheap end of its chain (the
default strategy table at critical load); queue and key prefix come from the environment
so that ``celery resilience status`` reads the same ones as the test."""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery

from celery_resilience import AITask, Resilience, ResilientTask

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("RESILIENCE_TEST_ANSWER_QUEUE", "crtest-answer")

app = Celery("answerapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=os.environ.get("RESILIENCE_TEST_ANSWER_PREFIX", "crtest-answer"),
    resilience_tiers={"free": {"rate": "1/m", "burst": 1, "grace": 0}},
    resilience_default_tier="free",
    resilience_lease_window=0,
    resilience_queue_thresholds={QUEUE: {"high": 1, "critical": 2}},
    resilience_depth_interval=0.05,
    resilience_breakers={"primary": {}, "secondary": {}},
    resilience_templates={"answer.ask": "We are busy; your question {prompt!r} is noted."},
)
Resilience(app)


def _post(url: str, prompt: str) -> Any:
    response = httpx.post(url, json={"prompt": prompt}, timeout=10)
    response.raise_for_status()
    return response.json()


@app.task(base=AITask, name="answer.ask_secondary", breaker="secondary", max_retries=0)
def ask_secondary(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(name="answer.rules")
def rules(prompt: str, url: str) -> dict[str, str]:
    if "invoice" not in prompt:
        raise LookupError("no rule for this prompt")
    return {"label": "billing"}


@app.task(
    base=AITask,
    name="answer.ask",
    breaker="primary",
    request_type="interactive",
    max_retries=0,
    fallbacks=["answer.ask_secondary", "answer.rules", "template"],
)
def ask(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(
    base=AITask,
    name="answer.ask_rules_only",
    breaker="primary",
    request_type="interactive",
    max_retries=0,
    fallbacks=["answer.ask_secondary", "answer.rules"],
)
def ask_rules_only(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(
    base=AITask, name="answer.batch", breaker="primary", request_type="batch", max_retries=0,
    fallbacks=["answer.rules"],
)  # fmt: skip
def batch(prompt: str, url: str) -> Any:
    return _post(url, prompt)


@app.task(base=ResilientTask, name="answer.plain", request_type="interactive")
def plain(prompt: str, url: str) -> str:
    return prompt


@app.task(
    base=AITask,
    name="answer.ask_quiet",
    breaker="primary",
    request_type="interactive",
    max_retries=0,
    queue=f"{QUEUE}-quiet",  # no thresholds: normal load, where the default table paces
    fallbacks=["answer.ask_secondary", "answer.rules", "template"],
)
def ask_quiet(prompt: str, url: str) -> Any:
    return _post(url, prompt)
