"""AI tasks calling a provider over HTTP through the OpenAI SDK, in an app that starts
Sentry as most users do (``sentry_sdk.init(dsn=...)``: the default integrations, Celery's
and OpenAI's among them), reporting to the test's local ingestion endpoint. The mode for
handled errors (``resilience_sentry_handled``) comes from the environment, so that one
worker can run each."""

from __future__ import annotations

import os
import threading

import httpx2
import sentry_sdk
from celery import Celery
from openai import OpenAI

from celery_resilience import AITask, Resilience

REDIS = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PREFIX = os.environ.get("RESILIENCE_TEST_SENTRY_PREFIX", "crtest-sentry")
QUEUE = os.environ.get("RESILIENCE_TEST_SENTRY_QUEUE", "crtest-sentry")
# Never the same breaker as another: none of these trips but "tripping".
STEADY = {"failure_threshold": 1000, "minimum_calls": 1000, "recovery_timeout": 300, "jitter": 0}

app = Celery("sentryapp", broker=f"{REDIS}/11", backend=f"{REDIS}/12", set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    result_expires=600,
    resilience_store_url=f"{REDIS}/13",
    resilience_key_prefix=PREFIX,
    resilience_tiers={"standard": {"rate": "100000/s", "burst": 100000}},
    # More than the provider takes (it allows two calls per 3 s): its 429s are paced.
    resilience_providers={"paced": {"requests": "100/m"}},
    resilience_breakers={
        "answering": STEADY,
        "exhausting": STEADY,
        "caching": STEADY,
        # Two 500s trip it; it stays open for the rest of the test.
        "tripping": {"failure_threshold": 5, "minimum_calls": 2, "recovery_timeout": 300, "jitter": 0},
    },
    resilience_templates={
        "sn.answered": "no answer to {prompt!r} now",
        "sn.trips": "no answer to {prompt!r} now",
        "sn.cached": "no answer to {prompt!r} now",
    },
    resilience_sentry_handled=os.environ.get("RESILIENCE_TEST_SENTRY_HANDLED", "drop"),
    resilience_alert_interval=0.3,
    resilience_monitor_lease=1.5,
)
resilience = Resilience(app)
sentry_sdk.init(dsn=os.environ.get("RESILIENCE_TEST_SENTRY_DSN"))

_clients: dict[tuple[str, str], OpenAI] = {}
_lock = threading.Lock()


def complete(url: str, prompt: str, provider: str = "paced") -> str:
    """The SDK call, its HTTP client carrying the budget's hooks."""
    with _lock:
        client = _clients.get((url, provider))
        if client is None:
            client = _clients[(url, provider)] = OpenAI(
                base_url=url,
                api_key="test",
                max_retries=0,
                http_client=httpx2.Client(event_hooks=resilience.provider_hooks(provider)),
            )
    answer = client.chat.completions.create(model="test", messages=[{"role": "user", "content": prompt}])
    return answer.choices[0].message.content or ""


@app.task(base=AITask, name="sn.paced", provider="paced", prompt_param="prompt", max_retries=8)
def paced(prompt: str, url: str) -> str:
    return complete(url, prompt)


@app.task(base=AITask, name="sn.answered", breaker="answering", max_retries=0, fallbacks=["template"])
def answered(prompt: str, url: str) -> str:
    return complete(url, prompt, "answering")


@app.task(base=AITask, name="sn.trips", breaker="tripping", max_retries=0, fallbacks=["template"])
def trips(prompt: str, url: str) -> str:
    return complete(url, prompt, "tripping")


@app.task(base=AITask, name="sn.exhausted", breaker="exhausting", max_retries=0, fallbacks=["sn.no_rule"])
def exhausted(prompt: str, url: str) -> str:
    return complete(url, prompt, "exhausting")


@app.task(name="sn.no_rule")
def no_rule(prompt: str, url: str) -> str:
    raise LookupError(f"no rule for {prompt!r}")


# A loader that remembers its failure and raises the same object again, as memoised
# loaders, failed imports and connection pools do.
FAILED_LOAD = RuntimeError("the rules model failed to load")


@app.task(
    base=AITask, name="sn.cached", breaker="caching", max_retries=0, fallbacks=["sn.cached_rules", "template"]
)
def cached(prompt: str, url: str) -> str:
    return complete(url, prompt, "caching")


@app.task(name="sn.cached_rules")
def cached_rules(prompt: str, url: str) -> str:
    raise FAILED_LOAD


@app.task(name="sn.plain_load")
def plain_load() -> str:
    """A plain task that needs the same model: its failure is real."""
    raise FAILED_LOAD


@app.task(name="sn.plain_other")
def plain_other() -> str:
    raise RuntimeError("another failure, on an object of its own")


@app.task(name="sn.ping")
def ping() -> str:
    return "pong"
