"""The README's quick start, as a user copies it into a fresh project (broker from the environment)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from celery_resilience import Resilience, ResilientTask

app = Celery("quickapp", broker=os.environ["QUICKAPP_BROKER"], backend=os.environ["QUICKAPP_BACKEND"])
app.conf.task_default_queue = os.environ["QUICKAPP_QUEUE"]
app.conf.resilience_store_url = os.environ["QUICKAPP_STORE"]
app.conf.resilience_key_prefix = os.environ["QUICKAPP_QUEUE"]
app.conf.resilience_tiers = {
    "free": {"rate": "60/m", "burst": 10, "grace": 5},
    "enterprise": {"rate": "6000/m", "burst": 1000, "grace": 100, "minimum_guaranteed": "600/m"},
}
app.conf.resilience_default_tier = "free"
Resilience(app)


@app.task(base=ResilientTask, bind=True, request_type="interactive", name="quickapp.ask")
def ask(self: ResilientTask, prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "context": self.resilience_context}
