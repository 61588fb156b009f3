"""The breakers' settings: ``resilience_breakers``, ``resilience_error_weights`` and
``resilience_error_rules``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigurationError
from ..validation import SettingsReader, callable_or_path, named, number
from .classification import DEFAULT_WEIGHTS, Category, Classifier, Rule
from .machine import BreakerPolicy

__all__ = ["BreakerSettings", "read_breaker_settings"]

# name -> (default, minimum, exclusive minimum?, whole number?)
_BREAKER_FIELDS: dict[str, tuple[Any, float, bool, bool]] = {
    "failure_threshold": (5.0, 0.0, True, False),
    "window": (60.0, 0.0, True, False),
    "minimum_calls": (5, 1, False, True),
    "recovery_timeout": (30.0, 0.0, True, False),
    "max_recovery_timeout": (600.0, 0.0, True, False),
    "backoff": (2.0, 1.0, False, False),
    "jitter": (0.1, 0.0, False, False),
    "half_open_probes": (1, 1, False, True),
    "success_threshold": (1, 1, False, True),
    "probe_lease": (None, 0.0, True, False),
    "call_timeout": (None, 0.0, True, False),
    "quota_open_seconds": (3600.0, 0.0, True, False),
    "buckets": (10, 1, False, True),
}


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    policies: Mapping[str, BreakerPolicy]
    classifier: Classifier


def read_breaker_settings(read: SettingsReader, clock: Clock = SYSTEM_CLOCK) -> BreakerSettings:
    """The breakers and the classifier (reading ``Retry-After`` dates on ``clock``)."""
    return BreakerSettings(
        policies=MappingProxyType(_breakers(*read("breakers", {}))),
        classifier=_classifier(read, clock),
    )


def _breakers(setting: str, value: object) -> dict[str, BreakerPolicy]:
    policies: dict[str, BreakerPolicy] = {}
    for name, spec in named(setting, value).items():
        where = f"{setting}[{name!r}]"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(where, "a mapping of breaker options", spec)
        for key in spec:
            if key not in _BREAKER_FIELDS:
                raise ConfigurationError(
                    f"{where}[{key!r}]", f"one of {sorted(_BREAKER_FIELDS)}", has_value=False
                )
        fields: dict[str, Any] = {}
        for key, (default, minimum, exclusive, whole) in _BREAKER_FIELDS.items():
            raw = spec.get(key, default)
            checked = (
                None
                if raw is None
                else number(f"{where}[{key!r}]", raw, minimum=minimum, exclusive=exclusive, whole=whole)
            )
            fields[key] = checked if whole or checked is None else float(checked)
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
        policies[name] = BreakerPolicy(**fields)
    return policies


def _classifier(read: SettingsReader, clock: Clock) -> Classifier:
    setting, weights = read("error_weights", {})
    merged = dict(DEFAULT_WEIGHTS)
    categories = [c.value for c in Category]
    for key, weight in named(setting, weights).items():
        if key not in categories:
            raise ConfigurationError(setting, f"categories among {categories}", key)
        merged[Category(key)] = float(number(f"{setting}[{key!r}]", weight, minimum=0.0))
    return Classifier(merged, tuple(_rules(*read("error_rules"))), clock.now)


def _rules(setting: str, value: object) -> list[Rule]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigurationError(setting, "a list of callables or 'module.function' paths", value)
    return [
        callable_or_path(f"{setting}[{index}]", entry, "a callable taking an exception")
        for index, entry in enumerate(value)
    ]
