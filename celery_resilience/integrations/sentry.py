"""Alerts to Sentry, through the application's own Sentry set-up when it has one.

Each alert is one message event: its level, a fingerprint per rule and subject (so Sentry
groups repeats into one issue), tags (rule, breaker, ...) and the figures as context.
"""

from __future__ import annotations

import sentry_sdk

from ..alerts import Alert

__all__ = ["ensure_sentry", "send_alert", "flush"]


def ensure_sentry(dsn: str | None) -> bool:
    """Use the app's Sentry client if ``sentry_sdk.init`` was called; else start one from ``dsn``."""
    if sentry_sdk.get_client().is_active():
        return True
    if not dsn:
        return False
    sentry_sdk.init(dsn=dsn, default_integrations=False, auto_enabling_integrations=False)
    return True


def send_alert(alert: Alert) -> str | None:
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = alert.fingerprint
        for name, value in alert.tags.items():
            scope.set_tag(f"resilience.{name}", value)
        scope.set_context("resilience", {"rule": alert.rule, "subject": alert.subject, **alert.figures})
        return sentry_sdk.capture_message(alert.message, level=alert.level)  # type: ignore[arg-type]


def flush(timeout: float = 2.0) -> None:
    sentry_sdk.flush(timeout=timeout)
