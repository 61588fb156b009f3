"""The Celery side the web examples share: a resilient task and its tiers.

The broker is the environment's ``BROKER_URL`` (in memory by default, for the examples'
tests); a worker runs it with ``celery -A examples.web.tasks worker``.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_resilience import Resilience, ResilientTask

app = Celery("web", broker=os.environ.get("BROKER_URL", "memory://"), set_as_current=False)
app.conf.resilience_store_url = os.environ.get("RESILIENCE_STORE_URL", "memory://")
app.conf.resilience_tiers = {
    "free": {"rate": "10/m", "burst": 2},
    "pro": {"rate": "100/m", "burst": 10},
}
app.conf.resilience_default_tier = "free"
# Web callers are told to come back later rather than kept waiting.
app.conf.resilience_throttle_strategies = [{"strategy": "reject_with_backoff", "seconds": 30}]
Resilience(app)


@app.task(base=ResilientTask, bind=True, name="web.summarise", request_type="interactive")
def summarise(self: ResilientTask, text: str) -> dict[str, object]:
    return {"summary": text[:40], "for": self.resilience_context.get("user_id")}
