"""Alerts leave the cluster once: the sender, and the monitor that evaluates the rules.

``AlertSender.deliver`` is the one way an alert is sent: it takes the rule's cool-down
claim in the store (per rule and subject), and only the caller that gets the claim sends
it and keeps it for the status command. Two paths use it:
- the process whose outcome tripped a breaker sends the trip at once, not a monitor
  tick later;
- the alert monitor, one per cluster by a lease in the store: every worker runs it on a
  timer, only the lease holder evaluates the rules, and when it dies its lease lapses
  and another worker takes over.
Both use the same claims, so a trip sent at once is not sent again by the monitor, and a
change of monitor does not repeat an alert.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import StoreUnavailable
from ..load.prediction import Prediction
from .counters import count_open_seconds
from .port import MonitoringStore
from .rules import Alert, AlertRule, evaluate
from .settings import MonitoringSettings
from .summary import MetricsReader

__all__ = ["AlertMonitor", "AlertSender", "LEASE", "SENT_LOG"]

logger = logging.getLogger("celery_resilience.alerts")
# The line each sent alert leaves in the log. Sentry's logging integration must not
# record it: the alert already reaches Sentry as its own event, grouped by rule.
SENT_LOG = "celery_resilience.alerts.sent"
sent_log = logging.getLogger(SENT_LOG)

LEASE = "alert-monitor"


class AlertSender:
    """Sends alerts through ``send`` (Sentry by default), once per rule, subject and cool-down."""

    def __init__(
        self,
        rules: Mapping[str, AlertRule],
        store: Callable[[], MonitoringStore],
        send: Callable[[Alert], Any],
    ) -> None:
        self.rules = rules
        self._store = store
        self._send = send

    def deliver(self, alert: Alert) -> bool:
        """Send ``alert`` if its rule is on and this caller gets its cool-down claim."""
        rule = self.rules.get(alert.rule)
        if rule is None or not rule.enabled:
            return False
        store = self._store()
        try:
            if not store.claim(f"{alert.rule}:{alert.subject}", rule.cooldown):
                return False
        except StoreUnavailable as error:
            logger.warning(
                "alert %s/%s not sent, its cool-down is unknown: %s", alert.rule, alert.subject, error
            )
            return False
        self.emit(alert)
        record = {
            "rule": alert.rule,
            "subject": alert.subject,
            "level": alert.level,
            "message": alert.message,
            "at": store.now(),
        }
        try:
            store.push_alert(json.dumps(record))
        except StoreUnavailable as error:
            logger.warning("sent alert %s not kept for the status command: %s", alert.rule, error)
        return True

    def emit(self, alert: Alert) -> None:
        """Log and send, with no claim: for alerts about the store itself, which keeps no claims
        while it is down."""
        log = sent_log.error if alert.level in ("error", "fatal") else sent_log.warning
        log("%s [%s/%s]", alert.message, alert.rule, alert.subject)
        try:
            self._send(alert)
        except Exception as error:  # an unreachable Sentry must not stop the caller
            logger.warning("could not send alert %s: %s", alert.rule, error)


class AlertMonitor:
    """Evaluates the rules on each ``tick`` while ``owner`` holds the cluster's lease.

    ``open_breakers`` names the breakers open now (their open time is counted here);
    ``upcoming`` is the next hour's demand prediction, if any.
    """

    def __init__(
        self,
        settings: MonitoringSettings,
        sender: AlertSender,
        store: Callable[[], MonitoringStore],
        owner: str,
        *,
        open_breakers: Callable[[], list[str]] = list,
        upcoming: Callable[[], Prediction | None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.sender = sender
        self.owner = owner
        self._store = store
        self._open_breakers = open_breakers
        self._upcoming = upcoming
        self._store_down_alerted = False

    def tick(self) -> list[Alert]:
        """Evaluate the rules if this worker holds the lease; returns the alerts sent."""
        settings = self.settings
        store = self._store()
        try:
            if not store.hold_lease(LEASE, self.owner, settings.monitor_lease):
                return []
            count_open_seconds(store.count, dict.fromkeys(self._open_breakers(), settings.alert_interval))
            reader = MetricsReader(store)
            recent = reader.last(2, include_current=True)
            alerts = evaluate(settings.alerts, recent, reader.load_correlation(), self._upcoming())
            self._store_down_alerted = False
        except StoreUnavailable as error:
            logger.warning("alert monitor cannot reach the store: %s", error)
            if self._store_down_alerted:  # the store keeps no cool-down while it is down
                return []
            self._store_down_alerted = True
            alerts = evaluate(settings.alerts, [], None, None, store_down=True)
            for alert in alerts:
                self.sender.emit(alert)
            return alerts
        return [alert for alert in alerts if self.sender.deliver(alert)]
