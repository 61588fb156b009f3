"""The one validator kit every capability's settings use.

A wrong setting must stop the application at start-up, not at the first overload, so
every value is checked where it is read and every error names the setting and what was
expected. ``SettingsReader`` is how a capability reads its settings: each name is
written once, where it is read, and the reader remembers it, so that a key that no
capability reads (a typo: a limit silently not applied) can be refused.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .errors import ConfigurationError
from .rates import Rate, RateSyntaxError, parse_rate

__all__ = [
    "PREFIX",
    "NAME_RE",
    "NAME_FORM",
    "SettingsReader",
    "import_dotted",
    "did_you_mean",
    "integer",
    "seconds",
    "number",
    "share",
    "mapping",
    "named",
    "rate",
    "choice",
    "callable_or_path",
    "switch",
]

PREFIX = "resilience_"
# Tier, request type, breaker and provider names appear in keys, metric fields and
# channel messages: keep them plain.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NAME_FORM = "names of letters, digits, '_', '.' or '-' (at most 64)"


class SettingsReader:
    """Reads ``resilience_<name>`` from a Celery configuration, remembering every name read."""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self._conf = conf
        self.names: list[str] = []

    def __call__(self, name: str, default: Any = None) -> tuple[str, Any]:
        """The setting's full name (for errors) and its value, or ``default`` when unset."""
        full = PREFIX + name
        self.names.append(full)
        value = self._conf.get(full)
        return full, default if value is None else value

    def reject_unknown(self, namespace: str | None) -> None:
        """Refuse keys that look like ours and that no capability read, in any spelling Celery
        reads (``resilience_x``, or ``CELERY_RESILIENCE_X`` under Django's namespace)."""
        known = frozenset(self.names)
        prefixes = (PREFIX, f"{namespace.lower()}_{PREFIX}") if namespace else (PREFIX,)
        for key in list(self._conf):
            if not isinstance(key, str):
                continue
            lowered = key.lower()
            for prefix in prefixes:
                if not lowered.startswith(prefix):
                    continue
                name = PREFIX + lowered[len(prefix) :]
                if name in known:
                    break
                close = difflib.get_close_matches(name, sorted(known), n=1)
                if not close:
                    hint = "see docs/settings.md"
                else:  # in the spelling the key was written in
                    suggestion = key[: len(prefix) - len(PREFIX)] + close[0]
                    hint = f"did you mean {suggestion.upper() if key.isupper() else suggestion}?"
                raise ConfigurationError(key, f"a known resilience_* setting ({hint})", has_value=False)


def import_dotted(setting: str, path: str) -> object:
    """Import ``"module.attribute"`` (or ``"module:attribute"``), naming the setting on failure."""
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigurationError(setting, f"an importable 'module.function' path ({error})", path) from None


def did_you_mean(value: object, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or nothing."""
    close = difflib.get_close_matches(str(value), sorted(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def integer(name: str, value: object, *, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ConfigurationError(name, f"an integer {bound}", value)
    return value


def seconds(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(name, "a number of seconds", value)
    if value < 0 or (positive and value == 0):
        raise ConfigurationError(name, "a number of seconds " + ("> 0" if positive else ">= 0"), value)
    return float(value)


def number(
    name: str, value: object, *, minimum: float, exclusive: bool = False, whole: bool = False
) -> float:
    """A finite number at least ``minimum`` (above it when ``exclusive``); an integer when ``whole``."""
    ok_type = isinstance(value, int) if whole else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):  # type: ignore[arg-type]
        raise ConfigurationError(name, "an integer" if whole else "a number", value)
    if value < minimum or (exclusive and value == minimum):  # type: ignore[operator]
        raise ConfigurationError(name, f"a number {'>' if exclusive else '>='} {minimum:g}", value)
    return value  # type: ignore[return-value]


def share(name: str, value: object, *, low: float = 0.0, high: float = 1.0, expected: str = "") -> float:
    """A number in ``[low, high]`` (a use, a share, a confidence)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigurationError(name, expected or f"a number in [{low:g}, {high:g}]", value)
    return float(value)


def mapping(name: str, value: object, *, names: bool = False) -> Mapping[str, Any]:
    """A mapping with non-empty string keys; with ``names``, keys that are plain names."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(name, "a mapping (dict)", value)
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(name, "non-empty string keys", key)
        if names and not NAME_RE.match(key):
            raise ConfigurationError(name, NAME_FORM, key)
    return value


def named(name: str, value: object) -> Mapping[str, Any]:
    """A mapping keyed by plain names (breakers, providers, probes)."""
    return mapping(name, value, names=True)


def rate(name: str, value: object) -> Rate:
    """A rate above zero, written like ``"600/m"``."""
    try:
        parsed = parse_rate(value)  # type: ignore[arg-type]
    except RateSyntaxError as error:
        raise ConfigurationError(name, str(error).removeprefix("expected "), has_value=False) from None
    if parsed.count <= 0:
        raise ConfigurationError(name, "a rate above zero", value)
    return parsed


def choice(name: str, value: object, options: Iterable[str], expected: str) -> str:
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise ConfigurationError(name, expected + did_you_mean(value, options), value)
    return value


def callable_or_path(name: str, value: object, expected: str) -> Callable[..., Any]:
    """A callable, or the dotted path of one."""
    found = import_dotted(name, value) if isinstance(value, str) else value
    if not callable(found):
        raise ConfigurationError(name, expected, value)
    return found


def switch(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(name, "True or False", value)
    return value
