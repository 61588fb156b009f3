"""Validation of the breaker settings: ``resilience_breakers``, ``resilience_error_weights``,
``resilience_error_rules`` and ``resilience_providers``.

Kept apart from ``settings.py`` so each module stays one job; the helpers are shared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .breaker import BreakerPolicy
from .classify import DEFAULT_WEIGHTS, Category, Classifier, Rule
from .config_helpers import NAME_FORM, NAME_RE, import_dotted
from .errors import ConfigurationError
from .quota import ProviderBudget, default_burst
from .rates import RateSyntaxError, parse_rate

__all__ = ["parse_breakers", "parse_classifier", "parse_providers"]

PREFIX = "resilience_"

# name -> (default, minimum, exclusive minimum?, kind)
_BREAKER_FIELDS: dict[str, tuple[Any, float, bool, type]] = {
    "failure_threshold": (5.0, 0.0, True, float),
    "window": (60.0, 0.0, True, float),
    "minimum_calls": (5, 1, False, int),
    "recovery_timeout": (30.0, 0.0, True, float),
    "max_recovery_timeout": (600.0, 0.0, True, float),
    "backoff": (2.0, 1.0, False, float),
    "jitter": (0.1, 0.0, False, float),
    "half_open_probes": (1, 1, False, int),
    "success_threshold": (1, 1, False, int),
    "probe_lease": (None, 0.0, True, float),
    "call_timeout": (None, 0.0, True, float),
    "quota_open_seconds": (3600.0, 0.0, True, float),
    "buckets": (10, 1, False, int),
}


def _names(setting: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, "a mapping (dict)", value)
    for key in value:
        if not isinstance(key, str) or not NAME_RE.match(key):
            raise ConfigurationError(setting, NAME_FORM, key)
    return value


def _number(setting: str, value: object, kind: type, minimum: float, exclusive: bool) -> float | int:
    ok_type = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):  # type: ignore[arg-type]
        raise ConfigurationError(setting, "an integer" if kind is int else "a number", value)
    if value < minimum or (exclusive and value == minimum):  # type: ignore[operator]
        raise ConfigurationError(setting, f"a number {'>' if exclusive else '>='} {minimum:g}", value)
    return value  # type: ignore[return-value]


def parse_breakers(value: object) -> Mapping[str, BreakerPolicy]:
    setting = f"{PREFIX}breakers"
    policies: dict[str, BreakerPolicy] = {}
    for name, spec in _names(setting, value if value is not None else {}).items():
        where = f"{setting}[{name!r}]"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(where, "a mapping of breaker options", spec)
        for key in spec:
            if key not in _BREAKER_FIELDS:
                raise ConfigurationError(
                    f"{where}[{key!r}]", f"one of {sorted(_BREAKER_FIELDS)}", has_value=False
                )
        fields: dict[str, Any] = {}
        for key, (default, minimum, exclusive, kind) in _BREAKER_FIELDS.items():
            raw = spec.get(key, default)
            fields[key] = None if raw is None else _number(f"{where}[{key!r}]", raw, kind, minimum, exclusive)
        if fields["jitter"] > 1:
            raise ConfigurationError(f"{where}['jitter']", "a share in [0, 1]", fields["jitter"])
        if fields["max_recovery_timeout"] < fields["recovery_timeout"]:
            raise ConfigurationError(
                f"{where}['max_recovery_timeout']",
                "at least recovery_timeout",
                fields["max_recovery_timeout"],
            )
        if fields["probe_lease"] is None:
            # A probe's lease must outlive the probe itself; a dead worker's lapses after it.
            fields["probe_lease"] = max(30.0, 2 * fields["call_timeout"]) if fields["call_timeout"] else 60.0
        typed: dict[str, Any] = {
            k: float(v) if _BREAKER_FIELDS[k][3] is float and v is not None else v for k, v in fields.items()
        }
        policies[name] = BreakerPolicy(**typed)
    return policies


def parse_classifier(weights: object, rules: object) -> Classifier:
    setting = f"{PREFIX}error_weights"
    merged = dict(DEFAULT_WEIGHTS)
    categories = [c.value for c in Category]
    for key, weight in (weights if isinstance(weights, Mapping) else _names(setting, weights or {})).items():
        if key not in categories:
            raise ConfigurationError(setting, f"categories among {categories}", key)
        merged[Category(key)] = float(_number(f"{setting}[{key!r}]", weight, float, 0.0, False))
    return Classifier(merged, tuple(_rules(rules)))


def _rules(value: object) -> list[Rule]:
    setting = f"{PREFIX}error_rules"
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigurationError(setting, "a list of callables or 'module.function' paths", value)
    rules: list[Rule] = []
    for index, entry in enumerate(value):
        rule = import_dotted(f"{setting}[{index}]", entry) if isinstance(entry, str) else entry
        if not callable(rule):
            raise ConfigurationError(f"{setting}[{index}]", "a callable taking an exception", rule)
        rules.append(rule)
    return rules


def parse_providers(value: object) -> Mapping[str, ProviderBudget]:
    setting = f"{PREFIX}providers"
    providers: dict[str, ProviderBudget] = {}
    for name, spec in _names(setting, value if value is not None else {}).items():
        where = f"{setting}[{name!r}]"
        if not isinstance(spec, Mapping) or set(spec) - {"rate", "burst"} or "rate" not in spec:
            raise ConfigurationError(
                where, "a mapping like {'rate': '1000/m'} (and optionally 'burst')", spec
            )
        try:
            rate = parse_rate(spec["rate"])
        except RateSyntaxError as error:
            raise ConfigurationError(
                f"{where}['rate']", str(error).removeprefix("expected "), has_value=False
            ) from None
        if rate.count < 1 or rate.count != int(rate.count):
            raise ConfigurationError(
                f"{where}['rate']", "a whole number of calls per period, at least one", spec["rate"]
            )
        burst = spec.get("burst", default_burst(rate.count))
        most = max(1, int(rate.count) - 1)
        if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= most:
            raise ConfigurationError(
                f"{where}['burst']",
                f"a whole number of calls from 1 to {most} (less than the rate's count, so that no "
                "window of the period sees more than the count)",
                burst,
            )
        providers[name] = ProviderBudget(rate, burst)
    return providers
