"""An app whose fallback chain names a task no module registers (``bad.rules`` is spelt
``bad.rule``): its worker must refuse to start."""

from __future__ import annotations

import os

from celery import Celery

from celery_resilience import Resilience, ResilientTask

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")

app = Celery("badchainapp", broker=f"{REDIS}/11", set_as_current=False)
app.conf.update(
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix="crtest-badchain",
    resilience_fallbacks={"bad.ask": ["bad.rule", "template"]},
)
Resilience(app)


@app.task(base=ResilientTask, name="bad.ask")
def ask(prompt: str) -> str:
    return prompt


@app.task(name="bad.rules")
def rules(prompt: str) -> str:
    return "rule-based"
