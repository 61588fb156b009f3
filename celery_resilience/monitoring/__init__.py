"""What operators see: per-minute metrics, alert rules, the alert monitor, Sentry.

- ``counters``: every metric name and the function that writes it;
- ``summary``: ``MetricsReader`` and the minute summary; ``rules``: the alert rules, pure;
- ``alerting``: ``AlertSender`` (one alert per cool-down) and the elected ``AlertMonitor``;
- ``sentry``: where alerts go; ``settings``: alerts and metrics; ``port``: the store.
"""

from .alerting import AlertMonitor, AlertSender
from .summary import MetricsReader, MinuteSummary

__all__ = ["AlertMonitor", "AlertSender", "MetricsReader", "MinuteSummary"]
