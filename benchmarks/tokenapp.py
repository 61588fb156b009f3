"""The Celery app the token benchmark's workers run, one budget variant per worker start
(``BENCH_TOKENS_VARIANT``): the provider's URL is a task argument."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import httpx2
import openai
import redis
from celery import Celery
from openai import OpenAI

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
VARIANT = os.environ.get("BENCH_TOKENS_VARIANT", "tokens")
WINDOW = float(os.environ.get("BENCH_TOKENS_WINDOW", "6"))
LIMIT = int(os.environ.get("BENCH_TOKENS_LIMIT", "60000"))
REQUESTS = int(os.environ.get("BENCH_TOKENS_REQUESTS", "140"))
# The output cap the calls name (the grid's cells); none: the learned and outage runs,
# whose answers are short and uncapped.
MAX_TOKENS = int(os.environ.get("BENCH_TOKENS_MAX", "0")) or None
# What the plain client counts after success: "tokens" (usage.total_tokens) or "requests".
COUNTS = os.environ.get("BENCH_TOKENS_COUNTS", "tokens")
QUEUE = f"bench-tokens-{VARIANT}"
PREFIX = f"bench-tokens-{VARIANT}"

BUDGETS: dict[str, dict[str, Any]] = {
    # The account's limits as they are written down, exactly.
    "tokens": {"requests": f"{REQUESTS}/{WINDOW:g}s", "tokens": f"{LIMIT}/{WINDOW:g}s"},
    "requests": {"requests": f"{REQUESTS}/{WINDOW:g}s"},
    "learned": {"tokens": {"learn": f"{LIMIT // 2}/{WINDOW:g}s"}},
    "outage": {"requests": "100000/m"},
    # No budget of ours: the tasks count for themselves (ask_after_success).
    "none": {"requests": "100000000/m"},
}

app = Celery("tokenbench", broker=f"{REDIS}/14", backend=f"{REDIS}/15", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/15",
    resilience_key_prefix=PREFIX,
    resilience_tiers={"standard": {"rate": "1000000/s", "burst": 1000000}},
    resilience_providers={"p": BUDGETS[VARIANT]},
    resilience_breakers={"p": {"minimum_calls": 5, "failure_threshold": 5, "recovery_timeout": 60}},
    resilience_templates={
        "bench.ask": "no answer now",
        "bench.ask_down": "no answer now",
        "bench.ask_retried": "no answer now",
    },
    resilience_retry_budget=False if os.environ.get("BENCH_RETRY_BUDGET") == "off" else {},
)
resilience = Resilience(app)

_clients: dict[str, OpenAI] = {}
_lock = threading.Lock()


def client(url: str) -> OpenAI:
    with _lock:
        found = _clients.get(url)
        if found is None:
            hooks = resilience.provider_hooks("p") if VARIANT != "none" else {}
            found = _clients[url] = OpenAI(
                base_url=url, api_key="bench", max_retries=0, http_client=httpx2.Client(event_hooks=hooks)
            )
        return found


def complete(url: str, prompt: str) -> Any:
    return client(url).chat.completions.create(
        model="bench",
        messages=[{"role": "user", "content": prompt}],
        **({"max_tokens": MAX_TOKENS} if MAX_TOKENS else {}),
    )


# Short budget waits held in the worker (quota_hold): the provider calls are quick and the
# four processes do nothing else, so a held slot costs less than a republish.
@app.task(
    base=AITask, name="bench.ask", provider="p", prompt_param="prompt", max_tokens=MAX_TOKENS, max_retries=3,
    quota_hold=0.5,
)  # fmt: skip
def ask(prompt: str, url: str) -> int:
    answer = complete(url, prompt)
    return answer.usage.total_tokens if answer.usage else 0


@app.task(
    base=AITask, name="bench.ask_down", breaker="p", provider="p", max_retries=5, fallbacks=["template"]
)
def ask_down(prompt: str, url: str) -> int:
    answer = complete(url, prompt)
    return answer.usage.total_tokens if answer.usage else 0


@app.task(
    base=AITask,
    name="bench.ask_retried",
    provider="p",
    max_retries=5,
    retry_delay_base=1,
    fallbacks=["template"],
)
def ask_retried(prompt: str, url: str) -> int:
    """No breaker: only the retry budget (or nothing) stands between an outage and retries."""
    answer = complete(url, prompt)
    return answer.usage.total_tokens if answer.usage else 0


_counter = redis.Redis.from_url(f"{REDIS}/15")


@app.task(name="bench.ask_after_success")
def ask_after_success(prompt: str, url: str) -> int:
    """Counting ``usage.total_tokens`` (or calls) after success only, as LiteLLM's router
    does (here shared in Redis across workers, which LiteLLM's in-memory count is not):
    before a call, the window's count plus the prompt's estimate must fit the limit."""
    estimate, limit = (len(prompt.encode()) // 4, LIMIT) if COUNTS == "tokens" else (1, REQUESTS)
    for _ in range(4):
        while True:
            key = f"{PREFIX}:used:{int(time.time() // WINDOW)}"
            if int(_counter.get(key) or 0) + estimate <= limit:
                break
            time.sleep(WINDOW - time.time() % WINDOW)
        try:
            answer = complete(url, prompt)
        except openai.RateLimitError as error:
            retry_after = error.response.headers.get("retry-after")
            time.sleep(float(retry_after) if retry_after else 1.0)
            continue
        used = answer.usage.total_tokens if answer.usage else 0
        _counter.incrby(key, used if COUNTS == "tokens" else 1)
        _counter.expire(key, int(WINDOW * 4))
        return used
    return 0


@app.task(name="bench.ping")
def ping() -> str:
    return "pong"
