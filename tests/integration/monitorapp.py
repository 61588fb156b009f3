"""An app whose workers run the alert monitor quickly, sending to a local Sentry stand-in."""

from __future__ import annotations

import os

from celery import Celery

from celery_resilience import Resilience, ResilientTask

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_MONITOR_PREFIX", "crtest-monitor")
QUEUE = os.environ.get("RESILIENCE_TEST_MONITOR_QUEUE", "crtest-monitor")

app = Celery("monitorapp", broker=f"{REDIS}/11", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_alert_interval=0.3,
    resilience_monitor_lease=1.5,
    resilience_sentry_dsn=os.environ.get("RESILIENCE_TEST_SENTRY_DSN"),
    resilience_alerts={"throttled_per_minute": {"threshold": 3, "cooldown": 600}},
    resilience_tiers={"standard": {"rate": "1/h", "burst": 1}},
    resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 30}],
)
Resilience(app)


@app.task(base=ResilientTask, name="monitor.work")
def work() -> None:
    return None
