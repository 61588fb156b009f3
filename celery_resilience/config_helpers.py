"""Helpers shared by the settings validators."""

from __future__ import annotations

import importlib
import re

from .errors import ConfigurationError

__all__ = ["NAME_RE", "NAME_FORM", "import_dotted"]

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
