"""Validation of the backpressure, worker health and prediction settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import ConfigurationError
from ..validation import NAME_FORM, NAME_RE, SettingsReader, import_dotted, seconds
from .fairness import FairPolicy, read_fair_queues
from .signals import DEFAULT_RESOURCE_STEPS, DEFAULT_SEVERITY_THRESHOLDS, QueueThresholds
from .sojourn import SojournPolicy, read_shedding

__all__ = ["LoadSettings", "read_load_settings", "Probe"]

Probe = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LoadSettings:
    queue_thresholds: Mapping[str, QueueThresholds]
    depth_interval: float
    heartbeat_interval: float
    health_stale_after: float
    resource_steps: tuple[tuple[float, float], ...]
    severity_thresholds: tuple[float, float] | None  # (high, critical) usage, None: off
    health_probes: Mapping[str, Probe]
    adaptive_interval: float
    prediction_enabled: bool
    prediction_confidence: float
    prediction_spike: float
    shedding: Mapping[str, SojournPolicy | None]
    fair_queues: Mapping[str, FairPolicy]


def _thresholds(setting: str, value: object) -> Mapping[str, QueueThresholds]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, "a mapping of queue name to {'high': N, 'critical': M}", value)
    result: dict[str, QueueThresholds] = {}
    for queue, spec in value.items():
        where = f"{setting}[{queue!r}]"
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(setting, "queue names as keys", queue)
        if not isinstance(spec, Mapping) or set(spec) != {"high", "critical"}:
            raise ConfigurationError(where, "a mapping with exactly 'high' and 'critical'", spec)
        high, critical = spec["high"], spec["critical"]
        for key, number in (("high", high), ("critical", critical)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise ConfigurationError(f"{where}[{key!r}]", "a whole number of messages >= 1", number)
        if critical <= high:
            raise ConfigurationError(f"{where}['critical']", f"more than high ({high})", critical)
        result[queue] = QueueThresholds(high, critical)
    return MappingProxyType(result)


def _steps(setting: str, value: object) -> tuple[tuple[float, float], ...]:
    if value is None:
        return tuple(DEFAULT_RESOURCE_STEPS)
    expected = (
        "a list of [usage above, multiplier] pairs in (0, 1], like [[0.9, 0.3], [0.8, 0.6]] "
        "([] to leave rates alone whatever the workers' resource use)"
    )
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError(setting, expected, value)
    steps: list[tuple[float, float]] = []
    for pair in value:
        if (
            isinstance(pair, str)
            or not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) and 0 < x <= 1 for x in pair)
        ):
            raise ConfigurationError(setting, expected, pair)
        steps.append((float(pair[0]), float(pair[1])))
    return tuple(sorted(steps, reverse=True))


def _severity(setting: str, value: object) -> tuple[float, float] | None:
    if value is None:
        return DEFAULT_SEVERITY_THRESHOLDS
    expected = "{'high': <use>, 'critical': <use>} with 0 < high < critical <= 1, or {} for none"
    if not isinstance(value, Mapping) or (value and set(value) != {"high", "critical"}):
        raise ConfigurationError(setting, expected, value)
    if not value:
        return None
    high, critical = value["high"], value["critical"]
    for key, number in (("high", high), ("critical", critical)):
        if isinstance(number, bool) or not isinstance(number, int | float) or not 0 < number <= 1:
            raise ConfigurationError(f"{setting}[{key!r}]", "a use in (0, 1]", number)
    if critical <= high:
        raise ConfigurationError(f"{setting}['critical']", f"more than high ({high})", critical)
    return float(high), float(critical)


def _probes(setting: str, value: object) -> Mapping[str, Probe]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, "a mapping of probe name to a callable or its dotted path", value)
    probes: dict[str, Probe] = {}
    for name, probe in value.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigurationError(setting, NAME_FORM, name)
        found = import_dotted(f"{setting}[{name!r}]", probe) if isinstance(probe, str) else probe
        if not callable(found):
            raise ConfigurationError(f"{setting}[{name!r}]", "a callable returning a use in [0, 1]", probe)
        probes[name] = found
    return MappingProxyType(probes)


def _prediction(setting: str, value: object) -> tuple[bool, float, float]:
    spec: Mapping[str, Any] = {} if value is None else value  # type: ignore[assignment]
    if not isinstance(spec, Mapping) or set(spec) - {"enabled", "confidence", "spike"}:
        raise ConfigurationError(setting, "a mapping with 'enabled', 'confidence' and 'spike'", value)
    enabled = spec.get("enabled", True)
    confidence = spec.get("confidence", 0.8)
    spike = spec.get("spike", 2.0)
    if not isinstance(enabled, bool):
        raise ConfigurationError(f"{setting}['enabled']", "True or False", enabled)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence < 1:
        raise ConfigurationError(f"{setting}['confidence']", "a confidence in [0, 1)", confidence)
    if isinstance(spike, bool) or not isinstance(spike, int | float) or spike <= 1:
        raise ConfigurationError(f"{setting}['spike']", "a spike factor > 1", spike)
    return enabled, float(confidence), float(spike)


def read_load_settings(read: SettingsReader) -> LoadSettings:
    heartbeat = seconds(*read("heartbeat_interval", 5.0), positive=True)
    enabled, confidence, spike = _prediction(*read("prediction"))
    thresholds = _thresholds(*read("queue_thresholds"))
    return LoadSettings(
        queue_thresholds=thresholds,
        depth_interval=seconds(*read("depth_interval", 0.3), positive=True),
        heartbeat_interval=heartbeat,
        health_stale_after=seconds(*read("health_stale_after", 3 * heartbeat), positive=True),
        resource_steps=_steps(*read("resource_thresholds")),
        severity_thresholds=_severity(*read("severity_thresholds")),
        health_probes=_probes(*read("health_probes")),
        adaptive_interval=seconds(*read("adaptive_interval", 1.0), positive=True),
        prediction_enabled=enabled,
        prediction_confidence=confidence,
        prediction_spike=spike,
        shedding=read_shedding(*read("shedding")),
        fair_queues=read_fair_queues(*read("fair_queues"), thresholds),
    )
