"""What the load monitor and the heartbeat need of the store."""

from __future__ import annotations

from typing import Protocol

from .signals import HealthSnapshot

__all__ = ["LoadStore", "DEMAND_HISTORY_HOURS", "LOAD_HISTORY_MINUTES"]

# How much history is kept: six weeks of hourly demand, a day of per-minute load.
DEMAND_HISTORY_HOURS = 6 * 7 * 24
LOAD_HISTORY_MINUTES = 24 * 60


class LoadStore(Protocol):
    def now(self) -> float:
        """The store's clock, in seconds since the epoch."""

    def publish_health(self, snapshot: HealthSnapshot) -> None:
        """Store a worker's heartbeat (replacing its previous one)."""

    def read_health(self) -> list[HealthSnapshot]:
        """Every worker's latest heartbeat; readers decide which are stale."""

    def record_load(self, minute: int, usage: float) -> None:
        """The cluster's resource use during ``minute`` (latest reading wins)."""

    def requests_in_hour(self, hour: int) -> float:
        """Admission requests decided during absolute ``hour`` (from the minute counters)."""

    def record_demand(self, hour: int, requests: float) -> None:
        """Keep an hour's demand in the history, unless another process already did."""

    def demand_history(self) -> dict[int, float]:
        """Absolute hour -> demand, for the hours kept (``DEMAND_HISTORY_HOURS``)."""
