"""An app whose store is the topology the test names (``RESILIENCE_TEST_STORE_URL``: one
server, a Cluster, Sentinel or a server speaking TLS, whose certificate
``RESILIENCE_TEST_STORE_CA`` names), run by a real worker; the broker is the local Redis."""

from __future__ import annotations

import os
from typing import Any

import httpx
from celery import Celery

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
STORE = os.environ.get("RESILIENCE_TEST_STORE_URL", f"{REDIS}/13")
STORE_CA = os.environ.get("RESILIENCE_TEST_STORE_CA")
PREFIX = os.environ.get("RESILIENCE_TEST_PREFIX", "crtest-topo") + "-topo"
QUEUE = os.environ.get("RESILIENCE_TEST_AI_QUEUE", "crtest-topo") + "-topo"


def tier_of(user_id: str) -> str | None:
    return "limited" if user_id.startswith("limited") else None


def create(store_url: str, store_ca: str | None = None) -> Celery:
    """The app on the store at ``store_url`` (trusting the certificate ``store_ca`` for TLS): the
    worker's, and the test's own publisher."""
    app = Celery("topoapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        result_expires=600,
        resilience_store_url=store_url,
        resilience_store_options={"ssl_ca_certs": store_ca} if store_ca else {},
        resilience_key_prefix=PREFIX,
        resilience_tiers={
            "standard": {"rate": "100000/s", "burst": 100000},
            "limited": {"rate": "1/m", "burst": 3, "grace": 0},
        },
        resilience_default_tier="standard",
        resilience_tier_resolver="tests.integration.topoapp.tier_of",
        resilience_breakers={
            "provider": {"failure_threshold": 2, "minimum_calls": 1, "recovery_timeout": 60}
        },
        resilience_templates={"topo.ask": "no answer to {prompt!r} now"},
        resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 0}],
    )
    Resilience(app)

    @app.task(
        base=AITask,
        breaker="provider",
        name="topo.ask",
        max_retries=0,
        cache_prompt="prompt",
        fallbacks=["cached_similar", "template"],
        shared=False,
    )
    def ask(prompt: str, url: str) -> Any:
        response = httpx.post(url, json={"prompt": prompt}, timeout=30)
        response.raise_for_status()
        return response.json()["answer"]

    @app.task(name="topo.ping", shared=False)
    def ping() -> str:
        return "pong"

    return app


app = create(STORE, STORE_CA)
