"""An app on RabbitMQ as operators run the status command against it; the store's URL and
the queue come from the environment, so a test can point it at a store that is down."""

from __future__ import annotations

import os

from celery import Celery

from celery_resilience import Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("RESILIENCE_TEST_OPS_QUEUE", "crtest-ops")

app = Celery(
    "opsapp", broker=os.environ.get("RESILIENCE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//"),
    set_as_current=False,
)  # fmt: skip
app.conf.update(
    resilience_store_url=os.environ.get("RESILIENCE_TEST_OPS_STORE", f"{REDIS}/13"),
    resilience_store_timeout=0.2,
    resilience_key_prefix=os.environ.get("RESILIENCE_TEST_OPS_PREFIX", "crtest-ops"),
    resilience_queue_thresholds={
        QUEUE: {"high": 2, "critical": 4},
        f"{QUEUE}-quiet": {"high": 2, "critical": 4},
    },
    # "held" stays open through any status command however slow the machine; "provider"
    # is past its open time within a second, so its half-open reading needs no long wait.
    resilience_breakers={
        "provider": {"minimum_calls": 1, "recovery_timeout": 1, "jitter": 0},
        "held": {"minimum_calls": 1, "recovery_timeout": 600, "jitter": 0},
    },
)
Resilience(app)
