"""What the load monitor and the heartbeat need of the store."""

from __future__ import annotations

from typing import Protocol

from .fairness import FairTag
from .signals import HealthSnapshot

__all__ = ["LoadStore", "FairStore", "DEMAND_HISTORY_HOURS", "LOAD_HISTORY_MINUTES"]

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


class FairStore(Protocol):
    """A fair queue's tenant state (``load/fairness.py``), one atomic call per operation.
    ``kind`` is ``"queue"`` for a queue's tenants, ``"provider"`` for a provider budget's
    (``providers/turns.py``, on a virtual clock, its ``capacity`` stated, ``max_delay``
    unused, and a turn further off than ``within`` not booked): a queue and a provider of
    one name share nothing."""

    def fair_tag(
        self,
        queue: str,
        tenant: str | None,
        weight: float,
        cost: float,
        max_delay: float,
        capacity: float | None,
        *,
        within: float | None = None,
        kind: str = "queue",
        lead: float = 0.0,
        lead_for: float = 0.0,
    ) -> FairTag:
        """Book a task of ``tenant`` (None: the anonymous callers') in the saturated
        ``queue``: ``fairness.start_tag`` in one round trip, on the store's clock (for a
        provider, ``turns.budget_turn``, its window ``lead`` calls ahead of its rate for
        ``lead_for`` seconds more)."""

    def fair_capacity(self, queue: str, reporter: str, served: float) -> None:
        """A worker process's report of the rate (tasks a second) it serves ``queue`` at."""

    def fair_status(self, queue: str, kind: str = "queue") -> dict[str, float]:
        """The queue's fairness counters (``fairness.FAIR_FIELDS``, in all and per tenant),
        its service rate now (``capacity``) and the tenants with work booked (``tenants``)."""
