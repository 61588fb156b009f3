"""An AI task whose provider counts tokens, called through the OpenAI SDK with the budget's
hooks on its HTTP client, run by real worker processes. The provider's URL is a task
argument, pointing at the test's server."""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx2
from celery import Celery
from openai import OpenAI

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_PREFIX", "crtest-tokens") + "-tokens"
QUEUE = os.environ.get("RESILIENCE_TEST_AI_QUEUE", "crtest-tokens") + "-tokens"

app = Celery("tokenapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_tiers={"standard": {"rate": "100000/s", "burst": 100000}},
    resilience_providers={
        # A small window: what a call reserves and what it is settled to decide whether
        # the next one fits.
        "reconciled": {"requests": "100000/m", "tokens": "700/m"},
        # The provider's own window (3000 tokens in 3 s), as the budget.
        "windowed": {"requests": "100000/m", "tokens": "3000/3s"},
        "retried": {"requests": "100000/m"},
        # Limits nobody wrote down: learned from a guess, from stated limits or from 429s.
        "stated": {"tokens": {"learn": "1000/3s"}},
        "booked": {"requests": "100000/m", "tokens": "500/10s"},
        "unstated": {"tokens": {"learn": "6000/3s"}},
    },
    # Over a minute, retries to a provider: two, plus a tenth of the first attempts.
    resilience_retry_budget={"ratio": 0.1, "window": 60, "minimum": 2},
    resilience_templates={
        "tokens.ask": "no answer to {prompt!r} now",
        "tokens.ask_windowed": "no answer to {prompt!r} now",
        "tokens.ask_retried": "no answer to {prompt!r} now",
        "tokens.ask_stated": "no answer to {prompt!r} now",
        "tokens.ask_unstated": "no answer to {prompt!r} now",
    },
)
resilience = Resilience(app)

_clients: dict[tuple[str, str], OpenAI] = {}
_lock = threading.Lock()


def client(url: str, provider: str) -> OpenAI:
    """One SDK client per provider and URL, its HTTP client carrying the budget's hooks."""
    with _lock:
        found = _clients.get((url, provider))
        if found is None:
            found = _clients[(url, provider)] = OpenAI(
                base_url=url,
                api_key="test",
                max_retries=0,
                http_client=httpx2.Client(event_hooks=resilience.provider_hooks(provider)),
            )
        return found


def complete(url: str, provider: str, prompt: str, max_tokens: int | None = 300) -> str:
    answer = client(url, provider).chat.completions.create(
        model="test", max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}]
    )
    return answer.choices[0].message.content or ""


@app.task(
    base=AITask,
    name="tokens.ask",
    provider="reconciled",
    prompt_param="prompt",
    max_tokens=300,
    max_retries=0,
    quota_wait_limit=0.5,
    fallbacks=["template"],
)
def ask(prompt: str, url: str) -> Any:
    return complete(url, "reconciled", prompt)


@app.task(
    base=AITask,
    name="tokens.ask_windowed",
    provider="windowed",
    prompt_param="prompt",
    max_tokens=300,
    max_retries=0,
    fallbacks=["template"],
)
def ask_windowed(prompt: str, url: str) -> Any:
    return complete(url, "windowed", prompt)


@app.task(
    base=AITask,
    name="tokens.ask_retried",
    provider="retried",
    prompt_param="prompt",
    max_retries=5,
    retry_backoff=1,
    fallbacks=["template"],
)
def ask_retried(prompt: str, url: str) -> Any:
    return complete(url, "retried", prompt)


@app.task(
    base=AITask, name="tokens.ask_stated", provider="stated", prompt_param="prompt", max_retries=3,
    max_tokens=150, fallbacks=["template"],
)  # fmt: skip
def ask_stated(prompt: str, url: str) -> Any:
    return complete(url, "stated", prompt, max_tokens=150)


@app.task(
    base=AITask, name="tokens.ask_unstated", provider="unstated", prompt_param="prompt", max_retries=3,
    max_tokens=150, fallbacks=["template"],
)  # fmt: skip
def ask_unstated(prompt: str, url: str) -> Any:
    return complete(url, "unstated", prompt, max_tokens=150)


@app.task(
    base=AITask, name="tokens.ask_booked", provider="booked", prompt_param="prompt", max_tokens=300,
    max_retries=0, quota_wait_limit=5,
)  # fmt: skip
def ask_booked(prompt: str, url: str) -> Any:
    return complete(url, "booked", prompt)


@app.task(name="tokens.ping")
def ping() -> str:
    return "pong"
