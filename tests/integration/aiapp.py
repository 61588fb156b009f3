"""A Celery app with AI tasks calling a local HTTP server, run by real worker processes.

Each breaker scenario has a breaker (and task) of its own so tests cannot disturb
each other; the provider's URL is a task argument, pointing at the test's server.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import redis
from celery import Celery

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_PREFIX", "crtest-ai")
QUEUE = os.environ.get("RESILIENCE_TEST_AI_QUEUE", "crtest-ai")
KILL_QUEUE = f"{QUEUE}-kill"

app = Celery("aiapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_tiers={
        "standard": {"rate": "100000/s", "burst": 100000},
        "probe": {"rate": "60/s", "burst": 1},
    },
    resilience_default_tier="standard",
    resilience_breakers={
        "probes": {
            "failure_threshold": 5,
            "minimum_calls": 1,
            "recovery_timeout": 1,
            "jitter": 0,
            "half_open_probes": 2,
            "success_threshold": 2,
            "probe_lease": 30,
        },
        "killable": {
            "failure_threshold": 5,
            "minimum_calls": 1,
            "recovery_timeout": 1,
            "jitter": 0,
            "probe_lease": 2,
        },
        "late": {"failure_threshold": 5, "minimum_calls": 1, "recovery_timeout": 1, "jitter": 0},
        "ops": {"failure_threshold": 5, "minimum_calls": 1},
        "quota": {"failure_threshold": 1000},
        "slow": {"failure_threshold": 4, "minimum_calls": 1, "call_timeout": 0.3, "recovery_timeout": 60},
        "primary": {"failure_threshold": 100, "minimum_calls": 1, "recovery_timeout": 60},
        "secondary": {"failure_threshold": 100, "minimum_calls": 1, "recovery_timeout": 60},
    },
    resilience_templates={"ai.ask_primary": "Sorry, we cannot answer {prompt!r} right now."},
    resilience_providers={"quota": {"rate": "10/s"}, "windowed": {"rate": "20/3s"}},
    # Worker health: fast heartbeats, and a tier whose admitted rate the tests can read
    # exactly (no leases, refusals name the wait for the next token).
    resilience_heartbeat_interval=0.5,
    resilience_adaptive_interval=0.2,
    resilience_lease_window=0,
    resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 0}],
)
Resilience(app)


def _post(url: str, timeout: float = 30.0) -> Any:
    response = httpx.post(url, timeout=timeout)
    response.raise_for_status()
    return response.json()


@app.task(base=AITask, breaker="probes", name="ai.probes", max_retries=0)
def call_probes(url: str) -> Any:
    return _post(url)


@app.task(base=AITask, breaker="killable", name="ai.killable", max_retries=0, queue=KILL_QUEUE)
def call_killable(url: str) -> Any:
    return _post(url)


@app.task(base=AITask, breaker="late", name="ai.late", max_retries=0)
def call_late(url: str) -> Any:
    return _post(url)


@app.task(base=AITask, breaker="ops", name="ai.ops", max_retries=0)
def call_ops(url: str) -> Any:
    return _post(url)


@app.task(base=AITask, bind=True, breaker="quota", name="ai.quota", max_retries=0)
def call_quota(self: AITask, url: str) -> Any:
    return {"answer": _post(url), "retries": self.request.retries}


@app.task(base=AITask, breaker="slow", name="ai.slow", max_retries=0)
def call_slow(url: str) -> Any:
    return _post(url)


@app.task(base=AITask, provider="windowed", name="ai.windowed", max_retries=0)
def call_windowed(url: str) -> int:
    """A provider budget without a breaker: the budget alone holds the calls."""
    response = httpx.post(
        url, json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=30
    )
    response.raise_for_status()
    return response.status_code


_flags = redis.Redis.from_url(f"{REDIS}/13")


@app.task(name="ai.burn")
def burn(flag: str, seconds: float = 60.0) -> int:
    """Keeps one CPU busy until ``flag`` is set (or the deadline): real load for the heartbeat."""
    deadline = time.monotonic() + seconds
    loops = 0
    while time.monotonic() < deadline:
        for _ in range(200_000):
            loops += 1
        if _flags.exists(flag):
            break
    return loops


def _answer(url: str, prompt: str) -> Any:
    return {"answer": _post(url)["answer"], "prompt": prompt}


@app.task(
    base=AITask,
    breaker="primary",
    name="ai.ask_primary",
    max_retries=0,
    fallbacks=["ai.ask_secondary", "cached_similar", "ai.rule_based", "template"],
    cache_prompt="prompt",
    cache_match=("model",),
)
def ask_primary(prompt: str, primary: str, secondary: str, model: str = "m") -> Any:
    return _answer(primary, prompt)


@app.task(base=AITask, breaker="secondary", name="ai.ask_secondary", max_retries=0)
def ask_secondary(prompt: str, primary: str, secondary: str, model: str = "m") -> Any:
    return _answer(secondary, prompt)


@app.task(name="ai.rule_based")
def rule_based(prompt: str, primary: str, secondary: str, model: str = "m") -> Any:
    """Keyword classification, the kind of answer that needs no provider."""
    if "unruly" in prompt:
        raise ValueError("no rule matches")
    return {"label": "urgent" if "urgent" in prompt else "normal"}


@app.task(base=AITask, breaker="primary", name="ai.ask_bare", max_retries=0, fallbacks=["ai.ask_secondary"])
def ask_bare(prompt: str, primary: str, secondary: str, model: str = "m") -> Any:
    return _answer(primary, prompt)


@app.task(name="ai.ping")
def ping() -> str:
    return "pong"
