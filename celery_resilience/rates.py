"""Rates written the way people say them: ``"600/m"``, ``"10/second"``, ``"5/10s"``.

Limits are configured as text in ``app.conf`` and read by operators, so the
parser accepts the spellings people use and rejects anything ambiguous with a
message that shows the accepted form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Rate", "parse_rate", "RateSyntaxError"]

_UNIT_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}

_RATE_RE = re.compile(r"^\s*(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<mult>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$")

RATE_FORM = "'<count>/<unit>' such as '600/m', '10/second' or '5/10s' (units: s, m, h, d)"


class RateSyntaxError(ValueError):
    """A rate string that does not say how many per how long."""


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` events per ``period`` seconds."""

    count: float
    period: float

    @property
    def per_second(self) -> float:
        return self.count / self.period

    def scaled(self, factor: float) -> Rate:
        return Rate(self.count * factor, self.period)

    def __str__(self) -> str:
        count = int(self.count) if self.count == int(self.count) else self.count
        for name, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
            if self.period == seconds:
                return f"{count}/{name}"
        return f"{count}/{self.period:g}s"


def parse_rate(text: str) -> Rate:
    """Parse ``"<count>/[<multiplier>]<unit>"``; the count may be zero, the period may not."""
    if not isinstance(text, str):
        raise RateSyntaxError(f"expected a rate string {RATE_FORM}, got {type(text).__name__}")
    match = _RATE_RE.match(text.lower())
    if match is None:
        raise RateSyntaxError(f"expected a rate {RATE_FORM}, got {text!r}")
    unit = match["unit"]
    if unit not in _UNIT_SECONDS:
        raise RateSyntaxError(f"unknown time unit {unit!r} in rate {text!r}; expected {RATE_FORM}")
    multiplier = float(match["mult"]) if match["mult"] else 1.0
    period = multiplier * _UNIT_SECONDS[unit]
    if period <= 0:
        raise RateSyntaxError(f"rate {text!r} has a zero period; expected {RATE_FORM}")
    return Rate(float(match["count"]), period)
