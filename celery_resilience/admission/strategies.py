"""What happens to a throttled request: the strategy table and criticality classes.

The table is configuration (``resilience_throttle_strategies``): an ordered list of
rules, each matching on load severity, tier, request type and criticality, first match
wins, the last rule matching everything. The default reproduces the reference
incident's policy, plus one rule the SRE book insists on: under load, sheddable work is
refused first; and one the reference's users asked for: at critical load, work a user
waits on is answered at once from the cheap end of its task's fallback chain (cache,
rules, template), labelled as such, instead of refused (``answer``). A task with no
chain, or whose cheap steps have nothing, refuses it as ``reject_with_backoff`` would.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..load.signals import Severity

__all__ = [
    "Criticality",
    "StrategyKind",
    "Strategy",
    "StrategyRule",
    "StrategyTable",
    "DEFAULT_STRATEGY_RULES",
    "DEFAULT_REQUEST_TYPES",
    "DEFAULT_CRITICALITY_RESERVE",
]


class Criticality(str, enum.Enum):
    """The SRE book's criticality classes, most important first."""

    CRITICAL_PLUS = "critical_plus"
    CRITICAL = "critical"
    SHEDDABLE_PLUS = "sheddable_plus"
    SHEDDABLE = "sheddable"

    @property
    def sheddable(self) -> bool:
        return self in (Criticality.SHEDDABLE_PLUS, Criticality.SHEDDABLE)


class StrategyKind(str, enum.Enum):
    DELAY = "delay"
    QUEUE_WITH_TIMEOUT = "queue_with_timeout"
    REJECT_WITH_BACKOFF = "reject_with_backoff"
    ANSWER = "answer"

    @property
    def paces(self) -> bool:
        """Whether the strategy publishes the request later instead of refusing it."""
        return self in (StrategyKind.DELAY, StrategyKind.QUEUE_WITH_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Strategy:
    kind: StrategyKind
    seconds: float

    def __str__(self) -> str:
        return f"{self.kind.value}({self.seconds:g}s)"


@dataclass(frozen=True, slots=True)
class StrategyRule:
    """A row of the table; ``None`` in a match field matches anything."""

    strategy: Strategy
    severities: frozenset[Severity] | None = None
    tiers: frozenset[str] | None = None
    request_types: frozenset[str] | None = None
    criticalities: frozenset[Criticality] | None = None

    @property
    def matches_everything(self) -> bool:
        return (
            self.severities is None
            and self.tiers is None
            and self.request_types is None
            and self.criticalities is None
        )

    def matches(self, severity: Severity, tier: str, request_type: str, criticality: Criticality) -> bool:
        return (
            (self.severities is None or severity in self.severities)
            and (self.tiers is None or tier in self.tiers)
            and (self.request_types is None or request_type in self.request_types)
            and (self.criticalities is None or criticality in self.criticalities)
        )


@dataclass(frozen=True, slots=True)
class StrategyTable:
    rules: tuple[StrategyRule, ...]

    def choose(self, severity: Severity, tier: str, request_type: str, criticality: Criticality) -> Strategy:
        for rule in self.rules:
            if rule.matches(severity, tier, request_type, criticality):
                return rule.strategy
        # Settings validation guarantees a final catch-all rule.
        raise LookupError("strategy table has no rule matching everything")


# The reference's table, as configuration. Read top to bottom; first match wins.
DEFAULT_STRATEGY_RULES: Sequence[Mapping[str, object]] = (
    {
        "severity": ["high", "critical"],
        "criticality": "sheddable",
        "strategy": "reject_with_backoff",
        "seconds": 30,
    },
    {"severity": "critical", "tier": "enterprise", "strategy": "delay", "seconds": 5},
    {
        "severity": "critical",
        "criticality": ["critical_plus", "critical"],
        "strategy": "answer",
        "seconds": 30,
    },
    {"severity": "critical", "strategy": "reject_with_backoff", "seconds": 30},
    {"severity": "high", "request_type": "critical_business", "strategy": "delay", "seconds": 2},
    {"severity": "high", "strategy": "queue_with_timeout", "seconds": 10},
    {"strategy": "delay", "seconds": 1},
)

# As in the SRE book, work that names no type is CRITICAL: it gets its tier's burst and
# grace in full. Being sheddable is something a task or a call opts into.
DEFAULT_REQUEST_TYPES: Mapping[str, str] = {
    "critical_business": "critical_plus",
    "interactive": "critical",
    "default": "critical",
    "background": "sheddable_plus",
    "batch": "sheddable",
}

# Share of a bucket's capacity kept back from each class: when a user's bucket runs
# low, the sheddable are throttled while critical work still gets through.
DEFAULT_CRITICALITY_RESERVE: Mapping[Criticality, float] = {
    Criticality.CRITICAL_PLUS: 0.0,
    Criticality.CRITICAL: 0.0,
    Criticality.SHEDDABLE_PLUS: 0.1,
    Criticality.SHEDDABLE: 0.2,
}
