"""Sentry: the plugin's alerts, and what becomes of the errors it handles.

Each alert is one message event: its level, a fingerprint per rule and subject (so Sentry
groups repeats into one issue), tags (rule, breaker, ...) and the figures as context.
Sending does not wait for Sentry: the SDK's transport thread posts the event, so a task
whose outcome tripped a breaker is not held up by it.

An error the plugin handles (a 429 it paces, a failure it retries, a step its chain moves
past) is what it is in Sentry: a warning marked handled, one issue per provider and
category, or nothing (``resilience_sentry_handled = "drop"``). Its count is in the
metrics either way. What the plugin does not handle is left as the SDK reports it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.logging import ignore_logger

from .alerting import SENT_LOG
from .rules import Alert
from .settings import DROP, WARNING

__all__ = [
    "SentrySink",
    "ensure_sentry",
    "forget_as_seen",
    "handled_errors",
    "report_exhausted",
    "send_alert",
]

HANDLED_TAG = "resilience.handled"

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


def forget_as_seen() -> None:
    """Leave Sentry's dedupe memory as if the event just processed had never been seen.
    ``DedupeIntegration`` remembers the last exception it let through and drops the next
    event of the same object; it forgets only when ``before_send`` drops an event, not
    when an event processor does. Without this, a real failure raised later with an
    exception object the plugin handled (a library that caches its exception does that)
    would never reach Sentry."""
    DedupeIntegration.reset_last_seen()


def _mark(event: Any, subject: str, category: str) -> Any:
    """What a handled error is in Sentry: a warning, handled, one issue per subject and category."""
    event["level"] = WARNING
    for value in (event.get("exception") or {}).get("values") or []:
        mechanism = value.setdefault("mechanism", {"type": "generic"})
        mechanism["handled"] = True
    event["fingerprint"] = ["celery-resilience", "handled", subject, category]
    tags = event.setdefault("tags", {})
    tags[HANDLED_TAG], tags["resilience.subject"] = category, subject
    return event


def report_exhausted(task: str, reason: str, attempts: list[dict[str, str]]) -> None:
    """An exhausted chain fails its task: the failure Sentry's Celery integration reports
    carries what was tried, and why each step did not answer."""
    if sentry_sdk.get_client().is_active():
        scope = sentry_sdk.get_isolation_scope()
        scope.set_context("resilience", {"task": task, "reason": reason, "attempts": attempts})
        scope.set_tag("resilience.exhausted", task)


@contextmanager
def handled_errors(subject: str, handled: Callable[[BaseException], str | None], mode: str) -> Iterator[None]:
    """Around a guarded call or a fallback step: an error event that the plugin will handle
    (``handled`` names its category; None: it will not) is marked handled, a warning, one
    issue per ``subject`` and category, or dropped with ``mode="drop"``. The SDK's own
    integrations (OpenAI, Anthropic, Celery for an inline step) report it at the call
    site as unhandled before the task decides; the user's spans and breadcrumbs stay.
    An event already marked by an inner scope is left as it is."""
    if not sentry_sdk.get_client().is_active():
        yield
        return

    def processor(event: Any, hint: Any) -> Any:
        exc_info = (hint or {}).get("exc_info")
        if not exc_info or exc_info[1] is None or HANDLED_TAG in (event.get("tags") or {}):
            return event
        category = handled(exc_info[1])
        if category is None:
            return event  # the task raises it: a real error, reported as the SDK made it
        forget_as_seen()
        if mode == DROP:
            return None
        return _mark(event, subject, category)

    with sentry_sdk.new_scope() as scope:
        scope.add_event_processor(processor)
        yield
