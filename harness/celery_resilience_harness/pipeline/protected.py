"""The pipeline with celery-resilience, configured through ``app.conf`` as a user would.

Every duration and rate is written in the pipeline's own time through
``config.seconds`` and ``config.per_minute``: the simulation runs time faster, and a
deployment leaves ``speedup`` at 1.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk
from celery import Celery

from celery_resilience import AITask, Resilience

from . import work
from .config import PipelineConfig
from .services import (
    CATEGORIES,
    Database,
    DatabaseBusy,
    Providers,
    Session,
    classify_by_keywords,
    prioritise_by_rules,
)

__all__ = ["create_app", "app", "database_is_not_the_provider"]


def database_is_not_the_provider(error: BaseException) -> str | None:
    """``resilience_error_rules``: a saturated database says nothing about the AI provider."""
    return "ignored" if isinstance(error, DatabaseBusy) else None


def create_app(config: PipelineConfig) -> Celery:
    app = config.new_app()
    seconds, per_minute = config.seconds, config.per_minute
    app.conf.resilience_store_url = config.store_url
    app.conf.resilience_key_prefix = config.key_prefix
    # Room for a heavy user (15 requests a minute at the height of the surge); the limits
    # shrink when the workers, the database or the provider are under strain.
    app.conf.resilience_tiers = {
        "free": {"rate": per_minute(20), "burst": 10, "grace": 5},
        "pro": {"rate": per_minute(60), "burst": 20, "grace": 10},
        "enterprise": {
            "rate": per_minute(300),
            "burst": 60,
            "grace": 20,
            "minimum_guaranteed": per_minute(60),
        },
    }
    app.conf.resilience_default_tier = "free"
    app.conf.resilience_tier_resolver = "celery_resilience_harness.pipeline.services.tier_of"
    app.conf.resilience_throttle_strategies = [
        {
            "severity": ["high", "critical"],
            "criticality": "sheddable",
            "strategy": "reject_with_backoff",
            "seconds": seconds(30),
        },
        {"severity": "critical", "tier": "enterprise", "strategy": "delay", "seconds": seconds(5)},
        # What a user waits on is answered from the cheap end of its chain, not refused.
        {
            "severity": "critical",
            "criticality": ["critical_plus", "critical"],
            "strategy": "answer",
            "seconds": seconds(30),
        },
        {"severity": "critical", "strategy": "reject_with_backoff", "seconds": seconds(30)},
        {"severity": "high", "request_type": "critical_business", "strategy": "delay", "seconds": seconds(2)},
        {"severity": "high", "strategy": "queue_with_timeout", "seconds": seconds(10)},
        {"strategy": "delay", "seconds": seconds(1)},
    ]
    # Users wait a minute: pacing them most of it would answer after they left, so what
    # cannot start within half of it is answered at once from the cheap steps instead.
    app.conf.resilience_max_throttle_delay = seconds(30)
    # A user waits a minute: work still queued long after that is answered by the cheap
    # end of its chain once the queue stands, so that the workers serve fresh requests.
    waiting = {"target": seconds(10), "interval": seconds(20), "deadline": seconds(20)}
    app.conf.resilience_shedding = {"interactive": waiting, "critical_business": waiting}
    provider_breaker = {
        "failure_threshold": 5.0,
        "window": seconds(60),
        "minimum_calls": 5,
        "recovery_timeout": seconds(30),
        "max_recovery_timeout": seconds(120),
        "call_timeout": seconds(45),
        "quota_open_seconds": seconds(600),
    }
    app.conf.resilience_breakers = {"primary": provider_breaker, "secondary": provider_breaker}
    # Stay under the providers' own limits instead of finding them by 429s.
    app.conf.resilience_providers = {
        "primary": {"rate": per_minute(0.9 * config.provider_rpm)},
        "secondary": {"rate": per_minute(0.9 * config.provider_rpm // 2)},
    }
    # The primary's budget is what work waits for: tenants take it in fair shares, and what
    # is past a tenant's share goes to the chain at once.
    app.conf.resilience_fair_providers = ["primary"]
    app.conf.resilience_error_rules = [
        "celery_resilience_harness.pipeline.protected.database_is_not_the_provider"
    ]
    app.conf.resilience_templates = {
        "pipeline.classify_content": "question",
        "pipeline.prioritise_task": "p2",
    }
    app.conf.resilience_queue_thresholds = {config.queue: {"high": 100, "critical": 300}}
    app.conf.resilience_heartbeat_interval = seconds(5)
    app.conf.resilience_adaptive_interval = seconds(2)
    app.conf.resilience_alert_interval = seconds(30)
    throttled_alert = 100 * config.speedup * config.provider_rpm / 1000
    app.conf.resilience_alerts = {"throttled_per_minute": {"threshold": throttled_alert}}

    providers = Providers(config.services_url, max_retries=0, timeout=seconds(20))
    database = Database(config.services_url)
    # The database's pool use lowers every tier's limit as it fills.
    app.conf.resilience_health_probes = {"db": database.pool_usage}
    Resilience(app)

    def open_session() -> Session:
        return database.open()

    def database_busy(task: AITask, error: DatabaseBusy) -> Any:
        """Try once more shortly; then answer from the fallbacks (labelled as such) rather
        than queue more work for a saturated database or fail the user."""
        if task.request.retries < 1:
            raise task.retry(exc=error, countdown=seconds(2))
        return task.answer_from_fallbacks(f"the database is saturated: {error}")

    ai_task: dict[str, Any] = {
        "base": AITask,
        "bind": True,
        "max_retries": 3,
        "retry_delay_base": 2.0,
        "retry_backoff_max": seconds(60),
        "quota_wait_limit": seconds(5),
        "shared": False,  # the plain pipeline's tasks have the same names
    }

    @app.task(
        name="pipeline.classify_content",
        breaker="primary",
        request_type="interactive",
        cache_prompt="text",
        fallbacks=[
            "pipeline.classify_content_secondary",
            "cached_similar",
            "pipeline.classify_by_keywords",
            "template",
        ],
        **ai_task,
    )
    def classify_content(self: AITask, text: str) -> Any:
        try:
            return work.classify_content(providers, database, open_session, "primary", text)
        except DatabaseBusy as busy:
            return database_busy(self, busy)

    @app.task(name="pipeline.classify_content_secondary", breaker="secondary", **ai_task)
    def classify_content_secondary(self: AITask, text: str) -> dict[str, Any]:
        return work.classify_content(providers, database, open_session, "secondary", text)

    @app.task(name="pipeline.classify_by_keywords", shared=False)
    def classify_by_keywords_task(text: str) -> dict[str, Any]:
        return {"label": classify_by_keywords(text), "provider": "rules", "labels": CATEGORIES}

    @app.task(
        name="pipeline.prioritise_task",
        breaker="primary",
        request_type="critical_business",
        cache_prompt="title",
        fallbacks=[
            "pipeline.prioritise_task_secondary",
            "cached_similar",
            "pipeline.prioritise_by_rules",
            "template",
        ],
        **ai_task,
    )
    def prioritise_task(self: AITask, title: str) -> Any:
        try:
            return work.prioritise_task(providers, database, open_session, "primary", title)
        except DatabaseBusy as busy:
            return database_busy(self, busy)

    @app.task(name="pipeline.prioritise_task_secondary", breaker="secondary", **ai_task)
    def prioritise_task_secondary(self: AITask, title: str) -> dict[str, Any]:
        return work.prioritise_task(providers, database, open_session, "secondary", title)

    @app.task(name="pipeline.prioritise_by_rules", shared=False)
    def prioritise_by_rules_task(title: str) -> dict[str, Any]:
        return {"priority": prioritise_by_rules(title), "provider": "rules"}

    return app


config = PipelineConfig.from_env()
app = create_app(config)
if config.sentry_dsn:  # task failures (and, protected, the plugin's alerts) go to Sentry
    sentry_sdk.init(dsn=config.sentry_dsn, traces_sample_rate=0.0)
