"""How loaded the system is, and how much to scale admission by: pure functions.

Signals (each in [0, 1] or a count): the cluster's workers' CPU, memory and load, user
probes (a database pool's use), breaker states of external APIs, queue depth, and the
predicted demand. They give the load severity the throttling table keys on, and a
product of multipliers that scales each tier's rate, clamped by the caller to
``[minimum_guaranteed, maximum_burst]``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Severity",
    "HealthSnapshot",
    "ClusterHealth",
    "QueueThresholds",
    "LoadFactors",
    "DEFAULT_RESOURCE_STEPS",
    "DEFAULT_SEVERITY_THRESHOLDS",
    "cluster_health",
    "step_multiplier",
    "usage_severity",
    "health_severity",
    "queue_severity",
    "queue_multiplier",
    "api_multiplier",
    "worst",
    "severity_rank",
]


class Severity(str, enum.Enum):
    """How loaded the system is; the throttling table keys on it."""

    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


# The reference's table: usage above 0.9 -> 0.3, above 0.8 -> 0.6, above 0.7 -> 0.8.
DEFAULT_RESOURCE_STEPS: Sequence[tuple[float, float]] = ((0.9, 0.3), (0.8, 0.6), (0.7, 0.8))
# The reference's cut-offs: resource use above 0.8 is HIGH severity, above 0.9 CRITICAL.
DEFAULT_SEVERITY_THRESHOLDS: tuple[float, float] = (0.8, 0.9)
_SEVERITY_ORDER = {Severity.NORMAL: 0, Severity.HIGH: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """One worker's heartbeat; usages in [0, 1], ``load`` is the 1-minute load per CPU."""

    worker: str
    at: float
    cpu: float
    memory: float
    load: float
    active: int
    probes: Mapping[str, float] = field(default_factory=dict)

    @property
    def usage(self) -> float:
        """The reference's signal: the higher of CPU and memory use. The load average is
        reported but not used: it lags by a minute, and would hold limits down long after
        the CPU is idle again."""
        return max(self.cpu, self.memory)


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    workers: int
    usage: float  # mean over fresh workers of each one's higher of CPU and memory use
    probes: Mapping[str, float]  # highest value of each probe over fresh workers
    active: int


@dataclass(frozen=True, slots=True)
class QueueThresholds:
    high: int
    critical: int


@dataclass(frozen=True, slots=True)
class LoadFactors:
    """Every factor on its own, for the status command and the metrics."""

    resources: float = 1.0
    probes: float = 1.0
    external_apis: float = 1.0
    queue: float = 1.0
    predicted: float = 1.0

    @property
    def product(self) -> float:
        return self.resources * self.probes * self.external_apis * self.queue * self.predicted


def cluster_health(
    snapshots: Iterable[HealthSnapshot], now: float, stale_after: float
) -> ClusterHealth | None:
    """Aggregate the heartbeats younger than ``stale_after``; None when no worker reported."""
    fresh = [s for s in snapshots if now - s.at <= stale_after]
    if not fresh:
        return None
    probes: dict[str, float] = {}
    for snapshot in fresh:
        for name, value in snapshot.probes.items():
            probes[name] = max(probes.get(name, 0.0), value)
    usage = sum(s.usage for s in fresh) / len(fresh)
    return ClusterHealth(len(fresh), usage, probes, sum(s.active for s in fresh))


def step_multiplier(usage: float, steps: Sequence[tuple[float, float]] = DEFAULT_RESOURCE_STEPS) -> float:
    """The multiplier of the first step whose threshold ``usage`` exceeds (steps high to low)."""
    for threshold, multiplier in steps:
        if usage > threshold:
            return multiplier
    return 1.0


def health_severity(
    health: ClusterHealth, thresholds: tuple[float, float] | None = DEFAULT_SEVERITY_THRESHOLDS
) -> Severity:
    """The severity the workers' health says: the higher of their resource use and any
    probe (a database pool at 95% is as critical as a CPU at 95%). No thresholds: none."""
    if thresholds is None:
        return Severity.NORMAL
    return usage_severity(max([health.usage, *health.probes.values()]), *thresholds)


def usage_severity(usage: float, high: float = 0.8, critical: float = 0.9) -> Severity:
    if usage > critical:
        return Severity.CRITICAL
    if usage > high:
        return Severity.HIGH
    return Severity.NORMAL


def queue_severity(depth: int | None, thresholds: QueueThresholds | None) -> Severity:
    if depth is None or thresholds is None:
        return Severity.NORMAL
    if depth >= thresholds.critical:
        return Severity.CRITICAL
    if depth >= thresholds.high:
        return Severity.HIGH
    return Severity.NORMAL


_QUEUE_MULTIPLIERS = {Severity.NORMAL: 1.0, Severity.HIGH: 0.6, Severity.CRITICAL: 0.3}


def queue_multiplier(severity: Severity) -> float:
    return _QUEUE_MULTIPLIERS[severity]


def api_multiplier(states: Iterable[str]) -> float:
    """Breaker states (their names): open (or forced open) -> 0.3; half-open -> 0.6; else 1.0
    (the worst wins)."""
    factor = 1.0
    for state in states:
        if state in ("open", "forced_open"):
            return 0.3
        if state == "half_open":
            factor = 0.6
    return factor


def severity_rank(severity: Severity) -> int:
    return _SEVERITY_ORDER[severity]


def worst(*severities: Severity) -> Severity:
    return max(severities, key=severity_rank)
