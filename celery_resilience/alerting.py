"""The alert monitor: one per cluster, by a lease in the store.

Every worker runs a monitor on a timer; only the one holding the lease evaluates the
rules, and when it dies its lease lapses and another worker takes over. Cool-downs live
in the store too, so a change of monitor does not send the same alert again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from .alerts import Alert, evaluate
from .errors import StoreUnavailable
from .metrics import MetricsReader

__all__ = ["AlertMonitor", "LEASE"]

logger = logging.getLogger("celery_resilience.alerts")

LEASE = "alert-monitor"


class AlertMonitor:
    def __init__(self, resilience: Any, owner: str, send: Callable[[Alert], Any]) -> None:
        self.resilience = resilience
        self.owner = owner
        self._send = send
        self._store_down_alerted = False

    def tick(self) -> list[Alert]:
        """Evaluate the rules if this worker holds the lease; returns the alerts sent."""
        settings = self.resilience.settings
        store = self.resilience.store
        try:
            if not store.hold_lease(LEASE, self.owner, settings.monitor_lease):
                return []
            self._count_open_time(store)
            reader = MetricsReader(store)
            recent = reader.last(2, include_current=True)
            alerts = evaluate(
                settings.alerts, recent, reader.load_correlation(), self.resilience.load.upcoming
            )
            self._store_down_alerted = False
        except StoreUnavailable as error:
            logger.warning("alert monitor cannot reach the store: %s", error)
            if self._store_down_alerted:  # the store keeps no cool-down while it is down
                return []
            self._store_down_alerted = True
            alerts = evaluate(settings.alerts, [], None, None, store_down=True)
            for alert in alerts:
                self._deliver(alert)
            return alerts
        sent = []
        for alert in alerts:
            rule = settings.alerts[alert.rule]
            if store.claim(f"{alert.rule}:{alert.subject}", rule.cooldown):
                self._deliver(alert)
                store.push_alert(
                    json.dumps(
                        {
                            "rule": alert.rule,
                            "subject": alert.subject,
                            "level": alert.level,
                            "message": alert.message,
                            "at": store.now(),
                        }
                    )
                )
                sent.append(alert)
        return sent

    def _count_open_time(self, store: Any) -> None:
        """Add this tick's interval to each breaker that is open (counted once, by the holder)."""
        interval = self.resilience.settings.alert_interval
        fields = {}
        for name in self.resilience.breakers.policies:
            state = self.resilience.breakers.read(name).state
            if state.value in ("open", "forced_open"):
                fields[f"breaker_open_seconds:{name}"] = interval
        if fields:
            store.count(fields)

    def _deliver(self, alert: Alert) -> None:
        log = logger.error if alert.level in ("error", "fatal") else logger.warning
        log("%s [%s/%s]", alert.message, alert.rule, alert.subject)
        try:
            self._send(alert)
        except Exception as error:  # an unreachable Sentry must not stop the monitor
            logger.warning("could not send alert %s: %s", alert.rule, error)
