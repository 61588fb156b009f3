"""The reference's incidents as data: phases of users and usage, and the switches each
phase sets on the fake provider and database.

Everything is stated in the reference's own numbers (users, requests per user per
minute, a provider limit of 1000 a minute, a pool of 200 connections) and scaled by two
knobs, so a replay takes minutes, not hours:
- ``scale`` multiplies users, the provider's limit and the pool alike (0.1: 30 users at
  the height of the surge against a limit of 100 a minute and 20 connections);
- ``speedup`` compresses time (6: a simulated minute lasts 10 seconds). Limits,
  timeouts and back-offs in the example pipeline are written through the same factor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Phase", "Scenario", "Scale", "SCENARIOS", "DEFAULT_SCENARIOS", "scenario"]

PROVIDER_RPM = 1000
DB_CONNECTIONS = 200


@dataclass(frozen=True)
class Scale:
    scale: float = 0.1
    speedup: float = 6.0
    # How long a user waits for an answer before giving up, in simulated seconds.
    patience: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], not {self.scale!r}")
        if not 0 < self.speedup <= 60:
            raise ValueError(f"speedup must be in (0, 60], not {self.speedup!r}")
        if self.patience <= 0:
            raise ValueError("patience must be > 0")

    def users(self, count: int) -> int:
        return max(1, round(count * self.scale))

    def wall(self, simulated_seconds: float) -> float:
        return simulated_seconds / self.speedup

    @property
    def provider_rpm(self) -> int:
        return max(1, round(PROVIDER_RPM * self.scale))

    @property
    def db_connections(self) -> int:
        return max(2, round(DB_CONNECTIONS * self.scale))


@dataclass(frozen=True)
class Phase:
    """``minutes`` of simulated time with ``users`` each sending ``per_user`` requests a
    minute. ``providers``/``db`` are switches set when the phase starts; a value given as
    a share of the pool (``held_share``) is turned into connections at run time."""

    label: str
    minutes: float
    users: int
    per_user: float
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    db_held_share: float | None = None
    marks: tuple[str, ...] = ()  # events this phase starts: "outage", "recovery", "spike", "calm"
    # The users split into tenants by these weights (a weight of 10 has ten times the
    # users of a weight of 1), each user sending ``per_user``; none: every user is a
    # tenant of its own.
    tenants: tuple[float, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    phases: tuple[Phase, ...]
    default: bool = True  # replayed by ``all`` (``make demo``); else by name

    @property
    def minutes(self) -> float:
        return sum(p.minutes for p in self.phases)


SURGE = Scenario(
    "surge",
    "Monday morning surge: 50 -> 150 -> 300 users, usage 5x",
    (
        Phase("09:15 normal traffic", 1.0, 50, 3),
        Phase("09:17 spike", 1.5, 150, 6),
        Phase("09:22 surge", 2.5, 300, 15),
    ),
)

OUTAGE = Scenario(
    "outage",
    "Provider outage and recovery",
    (
        Phase("normal", 1.5, 100, 4),
        Phase("provider down (503)", 3.0, 100, 4, {"primary": {"outage": 503}}, marks=("outage",)),
        Phase("provider back", 3.0, 100, 4, {"primary": {"outage": None}}, marks=("recovery",)),
    ),
)

DB_SPIKE = Scenario(
    "db-spike",
    "Database connection spike: another service takes 95% of the pool",
    (
        Phase("normal", 1.5, 100, 4),
        Phase("95% of connections taken", 2.5, 100, 4, db_held_share=0.95, marks=("spike",)),
        Phase("connections back", 2.0, 100, 4, db_held_share=0.0, marks=("calm",)),
    ),
)

# The provider takes 1000 a minute (the budget 900): twice that, then half of it.
OVERLOAD = Scenario(
    "overload",
    "Sustained overload: twice what the provider serves for three minutes, then half",
    (
        Phase("twice the provider's limit", 3.0, 200, 10),
        Phase("half of it", 2.0, 100, 5),
    ),
    default=False,
)

# Five tenants; one sends ten times what each other does, through ten times the users,
# each within its own limits (5 a minute): 2000 a minute, twice what the provider serves.
NOISY_TENANT = Scenario(
    "noisy-tenant",
    "A noisy tenant: one of five sends ten times each other's work, twice the provider's limit",
    (Phase("five tenants, one noisy", 4.0, 400, 5, tenants=(10.0, 1.0, 1.0, 1.0, 1.0)),),
    default=False,
)

SCENARIOS: Mapping[str, Scenario] = {s.name: s for s in (SURGE, OUTAGE, DB_SPIKE, OVERLOAD, NOISY_TENANT)}
DEFAULT_SCENARIOS = tuple(name for name, s in SCENARIOS.items() if s.default)


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}: expected one of {', '.join(SCENARIOS)}") from None
