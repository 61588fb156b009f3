"""Alerts to Sentry, through the application's own Sentry set-up when it has one.

Each alert is one message event: its level, a fingerprint per rule and subject (so Sentry
groups repeats into one issue), tags (rule, breaker, ...) and the figures as context.
Sending does not wait for Sentry: the SDK's transport thread posts the event, so a task
whose outcome tripped a breaker is not held up by it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import ignore_logger

from .alerting import SENT_LOG
from .rules import Alert

__all__ = ["SentrySink", "ensure_sentry", "handled_by_the_chain", "send_alert"]

_started_here = threading.Lock()

# An app that starts Sentry itself has its logging integration on: without this, each
# alert's log line would become a second event, an issue titled "%s [%s/%s]".
ignore_logger(SENT_LOG)


def ensure_sentry(dsn: str | None) -> bool:
    """Use the app's Sentry client if ``sentry_sdk.init`` was called; else start one from ``dsn``."""
    if sentry_sdk.get_client().is_active():
        return True
    if not dsn:
        return False
    with _started_here:
        if not sentry_sdk.get_client().is_active():
            sentry_sdk.init(dsn=dsn, default_integrations=False, auto_enabling_integrations=False)
            # Without the SDK's default integrations there is no at-exit flush: an alert
            # sent just before the process ends would be lost.
            atexit.register(sentry_sdk.flush, 2.0)
    return True


def send_alert(alert: Alert) -> str | None:
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = alert.fingerprint
        for name, value in alert.tags.items():
            scope.set_tag(f"resilience.{name}", value)
        scope.set_context("resilience", {"rule": alert.rule, "subject": alert.subject, **alert.figures})
        return sentry_sdk.capture_message(alert.message, level=alert.level)  # type: ignore[arg-type]


class SentrySink:
    """Where ``AlertSender`` sends: the app's Sentry client, or one started from
    ``resilience_sentry_dsn`` on first use (in the process that sends, forked or not)."""

    def __init__(self, dsn: str | None) -> None:
        self.dsn = dsn

    def ready(self) -> bool:
        return ensure_sentry(self.dsn)

    def __call__(self, alert: Alert) -> str | None:
        return send_alert(alert) if self.ready() else None


def _not_a_task_failure(event: Any, hint: Any) -> Any:
    mechanisms = [
        (value.get("mechanism") or {}).get("type")
        for value in (event.get("exception") or {}).get("values") or []
    ]
    return None if "celery" in mechanisms else event


@contextmanager
def handled_by_the_chain() -> Iterator[None]:
    """Around a fallback step: Sentry's Celery integration reports whatever leaves a task's
    body as an unhandled task failure, but a step's error is handled (the chain records it
    and tries the next step), so those reports are dropped. Anything else the step sends
    (its own ``capture_exception``, its error logs) still goes."""
    if not sentry_sdk.get_client().is_active():
        yield
        return
    with sentry_sdk.new_scope() as scope:
        scope.add_event_processor(_not_a_task_failure)
        yield
