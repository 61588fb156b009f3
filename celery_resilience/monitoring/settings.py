"""The monitoring settings: alert rules, the monitor's timing, Sentry, how long metrics live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import ConfigurationError
from ..validation import SettingsReader, choice, integer, seconds
from .rules import DEFAULT_RULES, LEVELS, AlertRule

__all__ = ["DROP", "HANDLED_MODES", "WARNING", "MonitoringSettings", "read_monitoring_settings"]

# ``resilience_sentry_handled``: an error the plugin handled is nothing in Sentry (counted in
# the metrics), or a warning marked handled.
WARNING, DROP = "warning", "drop"
HANDLED_MODES = (WARNING, DROP)


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    alerts: Mapping[str, AlertRule]
    alert_interval: float
    monitor_lease: float
    sentry_dsn: str | None
    # What becomes of an error the plugin handled, in Sentry: "drop" or "warning".
    sentry_handled: str
    metrics_ttl: int


def read_monitoring_settings(read: SettingsReader) -> MonitoringSettings:
    interval = seconds(*read("alert_interval", 60.0), positive=True)
    return MonitoringSettings(
        alerts=MappingProxyType(dict(_alert_rules(*read("alerts", {})))),
        alert_interval=interval,
        monitor_lease=seconds(*read("monitor_lease", 3 * interval), positive=True),
        sentry_dsn=_dsn(*read("sentry_dsn")),
        sentry_handled=choice(*read("sentry_handled", DROP), HANDLED_MODES, "'drop' or 'warning'"),
        metrics_ttl=integer(*read("metrics_ttl", 7200), low=60),
    )


def _dsn(setting: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        raise ConfigurationError(setting, "a Sentry DSN like 'https://key@host/project'", value)
    return value


def _alert_rules(setting: str, overrides: object) -> Mapping[str, AlertRule]:
    """Per rule, any of ``threshold``, ``level``, ``cooldown``, ``enabled``."""
    rules = dict(DEFAULT_RULES)
    if not isinstance(overrides, Mapping):
        raise ConfigurationError(setting, "a mapping of rule name to its options", overrides)
    for name, spec in overrides.items():
        if name not in DEFAULT_RULES:
            raise ConfigurationError(setting, f"rules among {sorted(DEFAULT_RULES)}", name)
        if not isinstance(spec, Mapping) or set(spec) - {"threshold", "level", "cooldown", "enabled"}:
            raise ConfigurationError(
                f"{setting}[{name!r}]", "a mapping of threshold, level, cooldown, enabled", spec
            )
        rule = rules[name]
        level = spec.get("level", rule.level)
        if level not in LEVELS:
            raise ConfigurationError(f"{setting}[{name!r}]['level']", f"one of {list(LEVELS)}", level)
        numbers = {}
        for key in ("threshold", "cooldown"):
            number = spec.get(key, getattr(rule, key))
            if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                raise ConfigurationError(f"{setting}[{name!r}][{key!r}]", "a number >= 0", number)
            numbers[key] = float(number)
        enabled = spec.get("enabled", rule.enabled)
        if not isinstance(enabled, bool):
            raise ConfigurationError(f"{setting}[{name!r}]['enabled']", "True or False", enabled)
        rules[name] = AlertRule(name, level, numbers["threshold"], numbers["cooldown"], enabled)
    return rules
