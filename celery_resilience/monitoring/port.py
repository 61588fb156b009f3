"""What metrics, the alert sender and the alert monitor need of the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["MonitoringStore", "SECONDS_PER_MINUTE"]

SECONDS_PER_MINUTE = 60


class MonitoringStore(Protocol):
    def now(self) -> float:
        """The store's clock, in seconds since the epoch."""

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        """Add to the current minute's metric counters."""

    def metrics(self, minute: int | None = None, scope: str = "") -> dict[str, float]:
        """Counters of one minute (default: the current one), summed over shards; a ``scope``
        reads another family (``PROVIDER_SCOPE``)."""

    def load_series(self, minutes: list[int]) -> dict[int, float]:
        """Recorded resource use of the given minutes (missing minutes are left out)."""

    def hold_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew lease ``name`` for ``owner``; False while another owner holds it."""

    def lease_holder(self, name: str) -> str | None:
        """Who holds lease ``name`` now, if anyone."""

    def claim(self, name: str, seconds: float) -> bool:
        """True for the first caller in ``seconds`` (a cool-down shared by every process)."""

    def push_alert(self, record: str, keep: int = 50) -> None:
        """Remember an alert that was sent (the latest ``keep`` are kept)."""

    def recent_alerts(self, count: int = 20) -> list[str]:
        """The latest alerts sent, newest first."""
