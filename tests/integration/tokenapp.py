"""An AI task whose provider counts tokens, called through the OpenAI SDK with the budget's
hooks on its HTTP client, run by real worker processes. The provider's URL is a task
argument, pointing at the test's server."""

from __future__ import annotations

import os
import threading
from typing import Any

import httpx2
from anthropic import Anthropic
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
        "guessed_low": {"tokens": {"learn": "1000/3s"}},
        # Streamed answers, settled from their events; and budgets nothing settles.
        "streamed": {"requests": "100000/m", "tokens": "700/m"},
        "streamed_anthropic": {"requests": "100000/m", "tokens": "700/m"},
        "streamed_without_usage": {"requests": "100000/m", "tokens": "700/m"},
        "without_hooks": {"requests": "100000/m", "tokens": "700/m"},
    },
    # Over a minute, retries to a provider: two, plus a tenth of the first attempts.
    resilience_retry_budget={"ratio": 0.1, "window": 60, "minimum": 2},
    resilience_templates={
        "tokens.ask": "no answer to {prompt!r} now",
        "tokens.ask_windowed": "no answer to {prompt!r} now",
        "tokens.ask_retried": "no answer to {prompt!r} now",
        "tokens.ask_stated": "no answer to {prompt!r} now",
        "tokens.ask_unstated": "no answer to {prompt!r} now",
        "tokens.stream": "no answer to {prompt!r} now",
        "tokens.stream_without_usage": "no answer to {prompt!r} now",
        "tokens.stream_anthropic": "no answer to {prompt!r} now",
        "tokens.ask_without_hooks": "no answer to {prompt!r} now",
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
    retry_delay_base=1,
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
    base=AITask, name="tokens.ask_guessed_low", provider="guessed_low", prompt_param="prompt", max_retries=3,
    max_tokens=150,
)  # fmt: skip
def ask_guessed_low(prompt: str, url: str) -> Any:
    return complete(url, "guessed_low", prompt, max_tokens=150)


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


def streamed(url: str, provider: str, prompt: str, usage: bool) -> str:
    """Streamed through the OpenAI SDK; the usage chunk only when asked for."""
    chunks = client(url, provider).chat.completions.create(
        model="test", max_tokens=300, messages=[{"role": "user", "content": prompt}], stream=True,
        stream_options={"include_usage": True} if usage else None,
    )  # fmt: skip
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


@app.task(
    base=AITask, name="tokens.stream", provider="streamed", prompt_param="prompt", max_tokens=300,
    max_retries=0, quota_wait_limit=0.5, fallbacks=["template"],
)  # fmt: skip
def stream(prompt: str, url: str) -> str:
    return streamed(url, "streamed", prompt, usage=True)


@app.task(
    base=AITask, name="tokens.stream_without_usage", provider="streamed_without_usage",
    prompt_param="prompt", max_tokens=300, max_retries=0, quota_wait_limit=0.5, fallbacks=["template"],
)  # fmt: skip
def stream_without_usage(prompt: str, url: str) -> str:
    return streamed(url, "streamed_without_usage", prompt, usage=False)


@app.task(
    base=AITask, name="tokens.stream_anthropic", provider="streamed_anthropic", prompt_param="prompt",
    max_tokens=300, max_retries=0, quota_wait_limit=0.5, fallbacks=["template"],
)  # fmt: skip
def stream_anthropic(prompt: str, url: str) -> str:
    """Streamed through the Anthropic SDK: usage in message_start and message_delta."""
    sdk = Anthropic(
        base_url=url.removesuffix("/v1"), api_key="test", max_retries=0,
        http_client=httpx2.Client(event_hooks=resilience.provider_hooks("streamed_anthropic")),
    )  # fmt: skip
    with sdk.messages.stream(
        model="test", max_tokens=300, messages=[{"role": "user", "content": prompt}]
    ) as s:
        return "".join(s.text_stream)


@app.task(
    base=AITask, name="tokens.ask_without_hooks", provider="without_hooks", prompt_param="prompt",
    max_tokens=300, max_retries=0, quota_wait_limit=0.5, fallbacks=["template"],
)  # fmt: skip
def ask_without_hooks(prompt: str, url: str) -> str:
    """An SDK client whose HTTP client carries no hooks: nothing settles the budget."""
    sdk = OpenAI(base_url=url, api_key="test", max_retries=0)
    answer = sdk.chat.completions.create(
        model="test", max_tokens=300, messages=[{"role": "user", "content": prompt}]
    )
    return answer.choices[0].message.content or ""


# Hooks for a provider with no budget in resilience_providers: built at import, as an
# application builds its clients; they count the provider's 429s.
unbudgeted = OpenAI(
    base_url="http://127.0.0.1:9/v1", api_key="test", max_retries=0,
    http_client=httpx2.Client(event_hooks=resilience.provider_hooks("unbudgeted")),
)  # fmt: skip


@app.task(name="tokens.ask_unbudgeted")
def ask_unbudgeted(prompt: str, url: str) -> str:
    try:
        answer = unbudgeted.with_options(base_url=url).chat.completions.create(
            model="test", messages=[{"role": "user", "content": prompt}]
        )
    except Exception as error:  # the 429 is the caller's to handle; the hooks counted it
        return type(error).__name__
    return answer.choices[0].message.content or ""


@app.task(name="tokens.ping")
def ping() -> str:
    return "pong"
