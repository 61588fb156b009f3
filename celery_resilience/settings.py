"""``resilience_*`` settings, read once into one frozen, validated object per app.

A wrong setting must stop the application at start-up, not at the first overload,
so every value is checked here and every error names the setting and what was
expected. Unknown ``resilience_*`` keys are errors too: a typo in a limit is a
limit silently not applied. The settings reference is ``docs/settings.md``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .alerts import AlertRule, parse_alert_rules
from .breaker import BreakerPolicy
from .breaker_settings import parse_breakers, parse_classifier, parse_providers
from .classify import Classifier
from .config_helpers import NAME_FORM, NAME_RE, import_dotted
from .errors import ConfigurationError
from .fallback_settings import FALLBACK_SETTINGS, FallbackSettings, parse_fallback_settings
from .load_settings import LOAD_SETTINGS, LoadSettings, parse_load_settings
from .policy import (
    DEFAULT_CRITICALITY_RESERVE,
    DEFAULT_REQUEST_TYPES,
    DEFAULT_STRATEGY_RULES,
    Criticality,
    Severity,
    Strategy,
    StrategyKind,
    StrategyRule,
    StrategyTable,
)
from .quota import ProviderBudget
from .rates import Rate, RateSyntaxError, parse_rate

__all__ = ["ResilienceSettings", "TierPolicy", "Limit", "TierResolver", "PREFIX"]

PREFIX = "resilience_"
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

    def limit_for(self, request_type: str) -> tuple[Limit, bool]:
        """The limit for a request type, and whether it has a bucket of its own."""
        own = self.request_type_limits.get(request_type)
        return (own, True) if own is not None else (self.limit, False)


@dataclass(frozen=True, slots=True)
class ResilienceSettings:
    store_url: str
    key_prefix: str
    key_shards: int
    store_timeout: float
    store_retry_interval: float
    fail_open: bool
    tiers: Mapping[str, TierPolicy]
    default_tier: str
    tier_resolver: TierResolver | None
    request_types: Mapping[str, Criticality]
    default_request_type: str
    criticality_reserve: Mapping[Criticality, float]
    strategies: StrategyTable
    max_throttle_delay: float
    metrics_ttl: int
    lease_window: float
    lease_max_tokens: int
    breakers: Mapping[str, BreakerPolicy]
    classifier: Classifier
    providers: Mapping[str, ProviderBudget]
    load: LoadSettings
    fallbacks: FallbackSettings
    alerts: Mapping[str, AlertRule]
    alert_interval: float
    monitor_lease: float
    sentry_dsn: str | None

    @classmethod
    def from_conf(
        cls, conf: Mapping[str, Any], *, broker_url: str | None = None, namespace: str | None = None
    ) -> ResilienceSettings:
        """Validate every ``resilience_*`` key; raise ``ConfigurationError`` on the first wrong one.
        ``namespace`` is the app's configuration namespace (Django's ``CELERY``), under which
        settings are spelled ``CELERY_RESILIENCE_TIERS``."""
        _reject_unknown(conf, namespace)
        get = conf.get
        request_types = _request_types(get(f"{PREFIX}request_types"))
        tiers = _tiers(get(f"{PREFIX}tiers"), request_types)
        return cls(
            store_url=_store_url(get(f"{PREFIX}store_url"), broker_url),
            key_prefix=_key_prefix(get(f"{PREFIX}key_prefix", "resilience")),
            key_shards=_int(f"{PREFIX}key_shards", get(f"{PREFIX}key_shards", 16), low=1, high=16384),
            store_timeout=_seconds(
                f"{PREFIX}store_timeout", get(f"{PREFIX}store_timeout", 0.25), positive=True
            ),
            store_retry_interval=_seconds(
                f"{PREFIX}store_retry_interval", get(f"{PREFIX}store_retry_interval", 2.0)
            ),
            fail_open=_failure_mode(get(f"{PREFIX}admission_on_store_failure", "open")),
            tiers=tiers,
            default_tier=_default_tier(get(f"{PREFIX}default_tier"), tiers),
            tier_resolver=_resolver(get(f"{PREFIX}tier_resolver")),
            request_types=request_types,
            default_request_type=_choice(
                f"{PREFIX}default_request_type",
                get(f"{PREFIX}default_request_type", "default"),
                request_types,
                "a request type named in resilience_request_types",
            ),
            criticality_reserve=_reserve(get(f"{PREFIX}criticality_reserve")),
            strategies=_strategies(get(f"{PREFIX}throttle_strategies"), tiers, request_types),
            max_throttle_delay=_seconds(
                f"{PREFIX}max_throttle_delay", get(f"{PREFIX}max_throttle_delay", 60.0), positive=True
            ),
            metrics_ttl=_int(f"{PREFIX}metrics_ttl", get(f"{PREFIX}metrics_ttl", 7200), low=60),
            lease_window=_seconds(f"{PREFIX}lease_window", get(f"{PREFIX}lease_window", 0.2)),
            breakers=MappingProxyType(dict(parse_breakers(get(f"{PREFIX}breakers")))),
            classifier=parse_classifier(get(f"{PREFIX}error_weights"), get(f"{PREFIX}error_rules")),
            providers=MappingProxyType(dict(parse_providers(get(f"{PREFIX}providers")))),
            load=parse_load_settings(get),
            fallbacks=parse_fallback_settings(get),
            alerts=MappingProxyType(dict(parse_alert_rules(get(f"{PREFIX}alerts")))),
            alert_interval=_seconds(
                f"{PREFIX}alert_interval", get(f"{PREFIX}alert_interval", 60.0), positive=True
            ),
            monitor_lease=_seconds(
                f"{PREFIX}monitor_lease",
                get(f"{PREFIX}monitor_lease", 3 * float(get(f"{PREFIX}alert_interval", 60.0) or 60.0)),
                positive=True,
            ),
            sentry_dsn=_dsn(get(f"{PREFIX}sentry_dsn")),
            lease_max_tokens=_int(
                f"{PREFIX}lease_max_tokens", get(f"{PREFIX}lease_max_tokens", 16), low=1, high=10_000
            ),
        )


KNOWN_SETTINGS = frozenset(
    PREFIX + name
    for name in (
        "store_url",
        "key_prefix",
        "key_shards",
        "store_timeout",
        "store_retry_interval",
        "admission_on_store_failure",
        "tiers",
        "default_tier",
        "tier_resolver",
        "request_types",
        "default_request_type",
        "criticality_reserve",
        "throttle_strategies",
        "max_throttle_delay",
        "metrics_ttl",
        "lease_window",
        "lease_max_tokens",
        "breakers",
        "error_weights",
        "error_rules",
        "providers",
        *LOAD_SETTINGS,
        *FALLBACK_SETTINGS,
        "alerts",
        "alert_interval",
        "monitor_lease",
        "sentry_dsn",
    )
)


def _dsn(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        raise ConfigurationError(f"{PREFIX}sentry_dsn", "a Sentry DSN like 'https://key@host/project'", value)
    return value


def _reject_unknown(conf: Mapping[str, Any], namespace: str | None) -> None:
    """A typo in a setting is a limit silently not applied: refuse keys that look like ours
    and are not, in any spelling Celery reads (``resilience_x``, or ``CELERY_RESILIENCE_X``
    under Django's namespace)."""
    prefixes = (PREFIX, f"{namespace.lower()}_{PREFIX}") if namespace else (PREFIX,)
    for key in list(conf):
        if not isinstance(key, str):
            continue
        lowered = key.lower()
        for prefix in prefixes:
            if not lowered.startswith(prefix):
                continue
            name = PREFIX + lowered[len(prefix) :]
            if name in KNOWN_SETTINGS:
                break
            close = difflib.get_close_matches(name, sorted(KNOWN_SETTINGS), n=1)
            if not close:
                hint = "see docs/settings.md"
            else:  # in the spelling the key was written in
                suggestion = key[: len(prefix) - len(PREFIX)] + close[0]
                hint = f"did you mean {suggestion.upper() if key.isupper() else suggestion}?"
            raise ConfigurationError(key, f"a known resilience_* setting ({hint})", has_value=False)


def _store_url(value: object, broker_url: str | None) -> str:
    name = f"{PREFIX}store_url"
    if value is None:
        if broker_url and broker_url.split("://", 1)[0] in ("redis", "rediss"):
            return broker_url
        return "memory://"
    if not isinstance(value, str) or value.split("://", 1)[0] not in ("redis", "rediss", "unix", "memory"):
        raise ConfigurationError(name, "a URL starting redis://, rediss://, unix:// or memory://", value)
    return value


def _key_prefix(value: object) -> str:
    name = f"{PREFIX}key_prefix"
    if not isinstance(value, str) or not value or len(value) > 64:
        raise ConfigurationError(name, "a non-empty string of at most 64 characters", value)
    if any(c in value for c in "{}*?[] \t\r\n"):
        raise ConfigurationError(name, "no braces, glob characters or white space", value)
    return value


def _int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigurationError(name, f"an integer {bound}", value)
    return value


def _seconds(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(name, "a number of seconds", value)
    if value < 0 or (positive and value == 0):
        raise ConfigurationError(name, "a number of seconds " + ("> 0" if positive else ">= 0"), value)
    return float(value)


def _failure_mode(value: object) -> bool:
    if value not in ("open", "closed"):
        raise ConfigurationError(f"{PREFIX}admission_on_store_failure", "'open' or 'closed'", value)
    return value == "open"


def _rate(name: str, value: object) -> Rate:
    try:
        rate = parse_rate(value)  # type: ignore[arg-type]
    except RateSyntaxError as error:
        raise ConfigurationError(name, str(error).removeprefix("expected "), has_value=False) from None
    if rate.count <= 0:
        raise ConfigurationError(name, "a rate above zero", value)
    return rate


def _mapping(name: str, value: object, *, names: bool = False) -> Mapping[str, Any]:
    """A mapping with string keys; with ``names``, keys that are names (tiers, request types)."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(name, "a mapping (dict)", value)
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(name, "non-empty string keys", key)
        if names and not NAME_RE.match(key):
            raise ConfigurationError(name, NAME_FORM, key)
    return value


_LIMIT_KEYS = frozenset({"rate", "burst", "grace", "grace_period"})
_TIER_KEYS = _LIMIT_KEYS | {"minimum_guaranteed", "maximum_burst", "request_types"}


def _limit(name: str, spec: Mapping[str, Any], allowed: frozenset[str]) -> Limit:
    for key in spec:
        if key not in allowed:
            raise ConfigurationError(f"{name}[{key!r}]", f"one of {sorted(allowed)}", has_value=False)
    if "rate" not in spec:
        raise ConfigurationError(f"{name}['rate']", "a rate such as '600/m'", has_value=False)
    rate = _rate(f"{name}['rate']", spec["rate"])
    burst = _int(f"{name}['burst']", spec.get("burst", max(1, math.ceil(rate.count))), low=1)
    grace = _int(f"{name}['grace']", spec.get("grace", 0), low=0)
    grace_period = _seconds(f"{name}['grace_period']", spec.get("grace_period", rate.period), positive=True)
    return Limit(rate, burst, grace, grace_period)


def _tiers(value: object, request_types: Mapping[str, Criticality]) -> Mapping[str, TierPolicy]:
    name = f"{PREFIX}tiers"
    raw = _mapping(name, DEFAULT_TIERS if value is None else value, names=True)
    if not raw:
        raise ConfigurationError(name, "at least one tier", value)
    tiers: dict[str, TierPolicy] = {}
    for tier, raw_spec in raw.items():
        tier_name = f"{name}[{tier!r}]"
        spec = _mapping(tier_name, raw_spec)
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
        per_type_raw = _mapping(f"{tier_name}['request_types']", spec.get("request_types", {}))
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
                _mapping(f"{tier_name}['request_types'][{request_type!r}]", type_spec),
                _LIMIT_KEYS,
            )
            for request_type, type_spec in per_type_raw.items()
        }
        tiers[tier] = TierPolicy(tier, limit, low, high, MappingProxyType(per_type))
    return MappingProxyType(tiers)


def _optional_rate(name: str, value: object) -> Rate | None:
    return None if value is None else _rate(name, value)


def _default_tier(value: object, tiers: Mapping[str, TierPolicy]) -> str:
    name = f"{PREFIX}default_tier"
    if value is None:
        if len(tiers) == 1:
            return next(iter(tiers))
        if "standard" in tiers:
            return "standard"
        raise ConfigurationError(name, f"one of the configured tiers {sorted(tiers)}", has_value=False)
    return _choice(name, value, tiers, f"one of the configured tiers {sorted(tiers)}")


def _choice(name: str, value: object, options: Mapping[str, Any], expected: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigurationError(name, expected, value)
    return value


def _resolver(value: object) -> TierResolver | None:
    name = f"{PREFIX}tier_resolver"
    if value is None:
        return None
    if isinstance(value, str):
        value = import_dotted(name, value)
    if not callable(value):
        raise ConfigurationError(name, "a callable taking a user id and returning a tier name", value)
    return value


def _request_types(value: object) -> Mapping[str, Criticality]:
    name = f"{PREFIX}request_types"
    raw = _mapping(name, DEFAULT_REQUEST_TYPES if value is None else value, names=True)
    choices = [c.value for c in Criticality]
    result: dict[str, Criticality] = {}
    for request_type, criticality in raw.items():
        if criticality not in choices:
            raise ConfigurationError(
                f"{name}[{request_type!r}]", f"a criticality among {choices}", criticality
            )
        result[request_type] = Criticality(criticality)
    return MappingProxyType(result)


def _reserve(value: object) -> Mapping[Criticality, float]:
    name = f"{PREFIX}criticality_reserve"
    reserve = dict(DEFAULT_CRITICALITY_RESERVE)
    for key, share in _mapping(name, value if value is not None else {}).items():
        if key not in {c.value for c in Criticality}:
            raise ConfigurationError(name, f"keys among {[c.value for c in Criticality]}", key)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ConfigurationError(f"{name}[{key!r}]", "a share of the burst in [0, 1)", share)
        reserve[Criticality(key)] = float(share)
    return MappingProxyType(reserve)


_RULE_MATCHERS = {"severity", "tier", "request_type", "criticality"}


def _strategies(
    value: object, tiers: Mapping[str, TierPolicy], request_types: Mapping[str, Criticality]
) -> StrategyTable:
    name = f"{PREFIX}throttle_strategies"
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
    row = _mapping(name, row)
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
    seconds = _seconds(
        f"{name}['seconds']", row.get("seconds", 0), positive=row["strategy"] != "reject_with_backoff"
    )
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
        strategy=Strategy(StrategyKind(row["strategy"]), seconds),
        severities=None if severities is None else frozenset(Severity(s) for s in severities),
        tiers=matched["tier"],
        request_types=matched["request_type"],
        criticalities=None if criticalities is None else frozenset(Criticality(c) for c in criticalities),
    )
