"""The pipeline before the incident: plain Celery tasks with ordinary retries.

The OpenAI client keeps its default retries (2), and every failure is retried by the
task with an exponential back-off, up to three times. Nothing limits how much work
users send, nothing stops calls to a failing provider, and nothing answers when the
provider cannot.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk
from celery import Celery, Task

from . import work
from .config import PipelineConfig
from .services import Database, Providers

__all__ = ["create_app", "app"]


def create_app(config: PipelineConfig) -> Celery:
    app = config.new_app()
    providers = Providers(config.services_url, max_retries=2, timeout=config.seconds(60))
    database = Database(config.services_url)
    # Not shared: the protected pipeline's tasks have the same names.
    retry_policy: dict[str, Any] = {"bind": True, "max_retries": 3, "shared": False}

    def backoff(task: Task[Any, Any]) -> float:
        return config.seconds(2.0 ** (task.request.retries + 1))

    @app.task(name="pipeline.classify_content", **retry_policy)
    def classify_content(self: Task[Any, Any], text: str) -> dict[str, Any]:
        try:
            return work.classify_content(providers, database, database.open, "primary", text)
        except Exception as error:
            raise self.retry(exc=error, countdown=backoff(self)) from error

    @app.task(name="pipeline.prioritise_task", **retry_policy)
    def prioritise_task(self: Task[Any, Any], title: str) -> dict[str, Any]:
        try:
            return work.prioritise_task(providers, database, database.open, "primary", title)
        except Exception as error:
            raise self.retry(exc=error, countdown=backoff(self)) from error

    return app


config = PipelineConfig.from_env()
app = create_app(config)
if config.sentry_dsn:  # task failures (and, protected, the plugin's alerts) go to Sentry
    sentry_sdk.init(dsn=config.sentry_dsn, traces_sample_rate=0.0)
