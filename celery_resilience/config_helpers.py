"""Helpers shared by the settings validators."""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable

from .errors import ConfigurationError

__all__ = ["NAME_RE", "NAME_FORM", "import_dotted", "did_you_mean"]

# Tier, request type, breaker and provider names appear in keys, metric fields and
# channel messages: keep them plain.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NAME_FORM = "names of letters, digits, '_', '.' or '-' (at most 64)"


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
