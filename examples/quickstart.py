"""A Celery app using celery-resilience the way the README's quick start shows.

Run a worker against Redis::

    celery -A examples.quickstart worker -P threads -c 4

and send a burst from two tiers of users from another shell::

    python -m examples.quickstart

Configure with ``REDIS_URL`` (default ``redis://127.0.0.1:6379``).
"""

from __future__ import annotations

import os
from collections import Counter

from celery import Celery

from celery_resilience import Resilience, ResilientTask, Throttled

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")

app = Celery("pipeline", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/2")
app.conf.resilience_store_url = f"{REDIS_URL}/1"
app.conf.resilience_tiers = {
    "free": {"rate": "60/m", "burst": 10, "grace": 5},
    "enterprise": {"rate": "6000/m", "burst": 1000, "grace": 100, "minimum_guaranteed": "600/m"},
}
app.conf.resilience_default_tier = "free"
Resilience(app)


@app.task(base=ResilientTask, bind=True, name="pipeline.prioritise", request_type="critical_business")
def prioritise(self: ResilientTask, title: str) -> dict[str, object]:
    """Stands in for an AI call: the worker sees who asked and what admission decided."""
    return {"title": title, "priority": len(title) % 5, "admission": self.resilience_context}


def send_burst(per_user: int = 20) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    pending = []
    for index in range(per_user):
        for user, tier in (("alice", "free"), ("acme", "enterprise")):
            try:
                pending.append(prioritise.apply_async((f"task {index}",), user_id=user, tier=tier))
            except Throttled as refused:
                outcomes[f"{tier}: rejected (retry after {refused.retry_after:.0f}s)"] += 1
    for result in pending:
        answer = result.get(timeout=120)
        outcomes[f"{answer['admission']['tier']}: {answer['admission']['decision']}"] += 1
    return outcomes


if __name__ == "__main__":
    for outcome, count in sorted(send_burst().items()):
        print(f"{count:4d}  {outcome}")
