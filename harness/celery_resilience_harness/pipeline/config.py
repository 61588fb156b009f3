"""Where the pipeline's services are and how fast simulated time runs, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from celery import Celery

__all__ = ["PipelineConfig"]


@dataclass(frozen=True)
class PipelineConfig:
    broker_url: str = "memory://localhost/"
    result_backend: str = "cache+memory://"
    store_url: str = "memory://"
    # The fake services (or real ones): providers at <url>/<name>/v1, the database at <url>/db.
    services_url: str = "http://127.0.0.1:8080"
    key_prefix: str = "pipeline"
    queue: str = "pipeline"
    # Simulated time runs ``speedup`` times faster: a "minute" of limits is 60 / speedup seconds.
    speedup: float = 1.0
    # The provider's requests per (simulated) minute, and the database's connections.
    provider_rpm: int = 1000
    db_connections: int = 200
    sentry_dsn: str | None = None

    def new_app(self) -> Celery:
        """A Celery app on this broker, backend and queue: both pipelines start from the
        same one, so what differs between them is only what they add."""
        app = Celery("pipeline", broker=self.broker_url, backend=self.result_backend, set_as_current=False)
        app.conf.update(
            task_default_queue=self.queue,
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True,
        )
        return app

    def seconds(self, simulated: float) -> float:
        """Wall-clock seconds for a duration stated in the pipeline's own time."""
        return simulated / self.speedup

    def per_minute(self, count: float) -> str:
        """A rate of ``count`` per simulated minute, over a simulated minute (``"90/10s"`` at
        six times speed): a provider budget's window must be the provider's, or the budget
        lets through in one window what the provider counts in several."""
        return f"{count:g}/{self.seconds(60):g}s"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineConfig:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            broker_url=env.get("PIPELINE_BROKER_URL", defaults.broker_url),
            result_backend=env.get("PIPELINE_RESULT_BACKEND", defaults.result_backend),
            store_url=env.get("PIPELINE_STORE_URL", defaults.store_url),
            services_url=env.get("PIPELINE_SERVICES_URL", defaults.services_url),
            key_prefix=env.get("PIPELINE_KEY_PREFIX", defaults.key_prefix),
            queue=env.get("PIPELINE_QUEUE", defaults.queue),
            speedup=float(env.get("PIPELINE_SPEEDUP", defaults.speedup)),
            provider_rpm=int(env.get("PIPELINE_PROVIDER_RPM", defaults.provider_rpm)),
            db_connections=int(env.get("PIPELINE_DB_CONNECTIONS", defaults.db_connections)),
            sentry_dsn=env.get("SENTRY_DSN") or None,
        )

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces this configuration in a worker process."""
        env = {
            "PIPELINE_BROKER_URL": self.broker_url,
            "PIPELINE_RESULT_BACKEND": self.result_backend,
            "PIPELINE_STORE_URL": self.store_url,
            "PIPELINE_SERVICES_URL": self.services_url,
            "PIPELINE_KEY_PREFIX": self.key_prefix,
            "PIPELINE_QUEUE": self.queue,
            "PIPELINE_SPEEDUP": repr(self.speedup),
            "PIPELINE_PROVIDER_RPM": str(self.provider_rpm),
            "PIPELINE_DB_CONNECTIONS": str(self.db_connections),
        }
        if self.sentry_dsn:
            env["SENTRY_DSN"] = self.sentry_dsn
        return env
