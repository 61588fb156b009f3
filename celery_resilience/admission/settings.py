"""Admission's settings: tiers and their limits, request types, the throttling table, leases."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import ConfigurationError
from ..load.signals import Severity
from ..rates import Rate
from ..validation import (
    SettingsReader,
    callable_or_path,
    choice,
    integer,
    mapping,
    number,
    rate,
    seconds,
)
from .strategies import (
    DEFAULT_CRITICALITY_RESERVE,
    DEFAULT_REQUEST_TYPES,
    DEFAULT_STRATEGY_RULES,
    Criticality,
    Strategy,
    StrategyKind,
    StrategyRule,
    StrategyTable,
)

__all__ = ["AdmissionSettings", "TierPolicy", "Limit", "TierResolver", "read_admission_settings"]

TierResolver = Callable[[str], "str | None"]

DEFAULT_TIERS: Mapping[str, Mapping[str, object]] = {"standard": {"rate": "600/m"}}


@dataclass(frozen=True, slots=True)
class Limit:
    """A baseline: ``rate`` sustained, ``burst`` at once, ``grace`` extra per ``grace_period``."""

    rate: Rate
    burst: int
    grace: int
    grace_period: float


@dataclass(frozen=True, slots=True)
class TierPolicy:
    name: str
    limit: Limit
    minimum_guaranteed: Rate | None
    maximum_burst: Rate | None
    request_type_limits: Mapping[str, Limit] = field(default_factory=dict)
    weight: float = 1.0
    """The tier's share of a saturated fair queue or provider budget, relative to other tiers'
    (``resilience_fair_queues``, ``resilience_fair_providers``)."""

    def limit_for(self, request_type: str) -> tuple[Limit, bool]:
        """The limit for a request type, and whether it has a bucket of its own."""
        own = self.request_type_limits.get(request_type)
        return (own, True) if own is not None else (self.limit, False)


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    tiers: Mapping[str, TierPolicy]
    default_tier: str
    tier_resolver: TierResolver | None
    request_types: Mapping[str, Criticality]
    default_request_type: str
    criticality_reserve: Mapping[Criticality, float]
    strategies: StrategyTable
    max_throttle_delay: float
    answer_beyond_horizon: frozenset[Criticality]
    """Classes whose requests a pacing strategy cannot place within the horizon are
    answered as under ``answer`` (when their task has a chain) rather than refused."""
    lease_window: float
    lease_max_tokens: int
    fail_open: bool
    anonymous_calls: str
    gated_tasks: Mapping[str, str | None]
    """Task names whose publishes by name (``send_task``) are admitted: name -> request type."""


def read_admission_settings(read: SettingsReader) -> AdmissionSettings:
    request_types = _request_types(*read("request_types", DEFAULT_REQUEST_TYPES))
    tiers = _tiers(*read("tiers", DEFAULT_TIERS), request_types)
    name, resolver = read("tier_resolver")
    return AdmissionSettings(
        tiers=tiers,
        default_tier=_default_tier(*read("default_tier"), tiers),
        tier_resolver=(
            None
            if resolver is None
            else callable_or_path(name, resolver, "a callable taking a user id and returning a tier name")
        ),
        request_types=request_types,
        default_request_type=choice(
            *read("default_request_type", "default"),
            request_types,
            "a request type named in resilience_request_types",
        ),
        criticality_reserve=_reserve(*read("criticality_reserve", {})),
        strategies=_strategies(*read("throttle_strategies"), tiers, request_types),
        max_throttle_delay=seconds(*read("max_throttle_delay", 60.0), positive=True),
        answer_beyond_horizon=_classes(*read("answer_beyond_horizon", ("critical_plus", "critical"))),
        lease_window=seconds(*read("lease_window", 0.2)),
        lease_max_tokens=integer(*read("lease_max_tokens", 16), low=1, high=10_000),
        fail_open=choice(
            *read("admission_on_store_failure", "open"), ("open", "closed"), "'open' or 'closed'"
        )
        == "open",
        anonymous_calls=choice(
            *read("anonymous_calls", "shared"), ANONYMOUS_POLICIES, f"one of {list(ANONYMOUS_POLICIES)}"
        ),
        gated_tasks=_gated_tasks(*read("gated_tasks", {}), request_types),
    )


# What a call naming no user gets: a bucket shared per tier, no gate (counted), a refusal.
ANONYMOUS_POLICIES = ("shared", "ungated", "refuse")


def _gated_tasks(
    name: str, value: object, request_types: Mapping[str, Criticality]
) -> Mapping[str, str | None]:
    """A list of task names, or a mapping of task name to ``{"request_type": ...}``."""
    expected = "a list of task names, or a mapping of task name to {'request_type': ...}"
    if isinstance(value, str) or not isinstance(value, Mapping | list | tuple):
        raise ConfigurationError(name, expected, value)
    specs: Mapping[str, Any] = value if isinstance(value, Mapping) else {key: {} for key in value}
    gated: dict[str, str | None] = {}
    for task, spec in specs.items():
        if not isinstance(task, str) or not task:
            raise ConfigurationError(name, expected, task)
        if not isinstance(spec, Mapping) or set(spec) - {"request_type"}:
            raise ConfigurationError(f"{name}[{task!r}]", "a mapping with at most 'request_type'", spec)
        request_type = spec.get("request_type")
        if request_type is not None:
            expected_type = "a request type named in resilience_request_types"
            choice(f"{name}[{task!r}]['request_type']", request_type, request_types, expected_type)
        gated[task] = request_type
    return MappingProxyType(gated)


_LIMIT_KEYS = frozenset({"rate", "burst", "grace", "grace_period"})
_TIER_KEYS = _LIMIT_KEYS | {"minimum_guaranteed", "maximum_burst", "request_types", "weight"}


def _limit(name: str, spec: Mapping[str, Any], allowed: frozenset[str]) -> Limit:
    for key in spec:
        if key not in allowed:
            raise ConfigurationError(f"{name}[{key!r}]", f"one of {sorted(allowed)}", has_value=False)
    if "rate" not in spec:
        raise ConfigurationError(f"{name}['rate']", "a rate such as '600/m'", has_value=False)
    limit_rate = rate(f"{name}['rate']", spec["rate"])
    burst = integer(f"{name}['burst']", spec.get("burst", max(1, math.ceil(limit_rate.count))), low=1)
    grace = integer(f"{name}['grace']", spec.get("grace", 0), low=0)
    grace_period = seconds(
        f"{name}['grace_period']", spec.get("grace_period", limit_rate.period), positive=True
    )
    return Limit(limit_rate, burst, grace, grace_period)


def _tiers(name: str, value: object, request_types: Mapping[str, Criticality]) -> Mapping[str, TierPolicy]:
    raw = mapping(name, value, names=True)
    if not raw:
        raise ConfigurationError(name, "at least one tier", value)
    tiers: dict[str, TierPolicy] = {}
    for tier, raw_spec in raw.items():
        tier_name = f"{name}[{tier!r}]"
        spec = mapping(tier_name, raw_spec)
        limit = _limit(tier_name, spec, _TIER_KEYS)
        low = _optional_rate(f"{tier_name}['minimum_guaranteed']", spec.get("minimum_guaranteed"))
        high = _optional_rate(f"{tier_name}['maximum_burst']", spec.get("maximum_burst"))
        if low is not None and low.per_second > limit.rate.per_second:
            raise ConfigurationError(
                f"{tier_name}['minimum_guaranteed']", f"at most the rate {limit.rate}", str(low)
            )
        if high is not None and high.per_second < limit.rate.per_second:
            raise ConfigurationError(
                f"{tier_name}['maximum_burst']", f"at least the rate {limit.rate}", str(high)
            )
        per_type_raw = mapping(f"{tier_name}['request_types']", spec.get("request_types", {}))
        for request_type in per_type_raw:
            if request_type not in request_types:
                # A limit for a request type that does not exist can never apply.
                raise ConfigurationError(
                    f"{tier_name}['request_types']",
                    f"request types named in resilience_request_types {sorted(request_types)}",
                    request_type,
                )
        per_type = {
            request_type: _limit(
                f"{tier_name}['request_types'][{request_type!r}]",
                mapping(f"{tier_name}['request_types'][{request_type!r}]", type_spec),
                _LIMIT_KEYS,
            )
            for request_type, type_spec in per_type_raw.items()
        }
        weight = number(f"{tier_name}['weight']", spec.get("weight", 1), minimum=0, exclusive=True)
        tiers[tier] = TierPolicy(tier, limit, low, high, MappingProxyType(per_type), float(weight))
    return MappingProxyType(tiers)


def _optional_rate(name: str, value: object) -> Rate | None:
    return None if value is None else rate(name, value)


def _default_tier(name: str, value: object, tiers: Mapping[str, TierPolicy]) -> str:
    expected = f"one of the configured tiers {sorted(tiers)}"
    if value is None:
        if len(tiers) == 1:
            return next(iter(tiers))
        if "standard" in tiers:
            return "standard"
        raise ConfigurationError(name, expected, has_value=False)
    return choice(name, value, tiers, expected)


def _request_types(name: str, value: object) -> Mapping[str, Criticality]:
    raw = mapping(name, value, names=True)
    choices = [c.value for c in Criticality]
    result: dict[str, Criticality] = {}
    for request_type, criticality in raw.items():
        if criticality not in choices:
            raise ConfigurationError(
                f"{name}[{request_type!r}]", f"a criticality among {choices}", criticality
            )
        result[request_type] = Criticality(criticality)
    return MappingProxyType(result)


def _reserve(name: str, value: object) -> Mapping[Criticality, float]:
    reserve = dict(DEFAULT_CRITICALITY_RESERVE)
    for key, share in mapping(name, value).items():
        if key not in {c.value for c in Criticality}:
            raise ConfigurationError(name, f"keys among {[c.value for c in Criticality]}", key)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ConfigurationError(f"{name}[{key!r}]", "a share of the burst in [0, 1)", share)
        reserve[Criticality(key)] = float(share)
    return MappingProxyType(reserve)


def _classes(name: str, value: object) -> frozenset[Criticality]:
    known = [c.value for c in Criticality]
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
        raise ConfigurationError(name, f"a list of criticality classes among {known}", value)
    unknown = [item for item in value if item not in known]
    if unknown:
        raise ConfigurationError(name, f"criticality classes among {known}", unknown[0])
    return frozenset(Criticality(item) for item in value)


_RULE_MATCHERS = {"severity", "tier", "request_type", "criticality"}


def _strategies(
    name: str, value: object, tiers: Mapping[str, TierPolicy], request_types: Mapping[str, Criticality]
) -> StrategyTable:
    user_supplied = value is not None
    raw = DEFAULT_STRATEGY_RULES if value is None else value
    if isinstance(raw, str | bytes | Mapping) or not hasattr(raw, "__iter__"):
        raise ConfigurationError(
            name, "a list of rules like {'severity': 'high', 'strategy': 'delay', 'seconds': 2}", raw
        )
    known: dict[str, set[str]] = {
        "severity": {s.value for s in Severity},
        "criticality": {c.value for c in Criticality},
        # The default table names the reference's tiers and request types; rules of
        # the user's own must name ones that exist, or a typo silently never matches.
        "tier": set(tiers) if user_supplied else set(),
        "request_type": set(request_types) if user_supplied else set(),
    }
    rules = [_rule(f"{name}[{index}]", row, known, user_supplied) for index, row in enumerate(raw)]
    if not rules or not rules[-1].matches_everything:
        raise ConfigurationError(
            name, "a last rule with no conditions, used when nothing else matches", has_value=False
        )
    return StrategyTable(tuple(rules))


def _rule(name: str, row: object, known: Mapping[str, set[str]], check_names: bool) -> StrategyRule:
    row = mapping(name, row)
    for key in row:
        if key not in _RULE_MATCHERS | {"strategy", "seconds"}:
            raise ConfigurationError(
                f"{name}[{key!r}]",
                f"one of {sorted(_RULE_MATCHERS | {'strategy', 'seconds'})}",
                has_value=False,
            )
    kinds = [k.value for k in StrategyKind]
    if row.get("strategy") not in kinds:
        raise ConfigurationError(f"{name}['strategy']", f"one of {kinds}", row.get("strategy"))
    delay = seconds(f"{name}['seconds']", row.get("seconds", 0), positive=StrategyKind(row["strategy"]).paces)
    matched: dict[str, frozenset[str] | None] = {}
    for key in sorted(_RULE_MATCHERS):
        values = row.get(key)
        if values is None:
            matched[key] = None
            continue
        items = [values] if isinstance(values, str) else values
        if (
            not isinstance(items, list | tuple | set | frozenset)
            or not items
            or not all(isinstance(v, str) for v in items)
        ):
            raise ConfigurationError(f"{name}[{key!r}]", "a name or a non-empty list of names", values)
        if key in ("severity", "criticality") or check_names:
            unknown = [v for v in items if v not in known[key]]
            if unknown:
                raise ConfigurationError(f"{name}[{key!r}]", f"names among {sorted(known[key])}", unknown[0])
        matched[key] = frozenset(items)
    severities = matched["severity"]
    criticalities = matched["criticality"]
    return StrategyRule(
        strategy=Strategy(StrategyKind(row["strategy"]), delay),
        severities=None if severities is None else frozenset(Severity(s) for s in severities),
        tiers=matched["tier"],
        request_types=matched["request_type"],
        criticalities=None if criticalities is None else frozenset(Criticality(c) for c in criticalities),
    )
