"""The provider budgets' settings: ``resilience_providers``, ``resilience_fair_providers``,
``resilience_token_counter`` and ``resilience_retry_budget``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import ConfigurationError
from ..rates import Rate
from ..validation import SettingsReader, callable_or_path, integer, mapping, named, seconds, share
from ..validation import rate as parse
from .budget import REQUESTS, UNITS, ProviderBudget, UnitBudget
from .retry_budget import RetryBudget

__all__ = ["ProviderSettings", "read_provider_settings"]

_EXAMPLE = (
    "a mapping like {'requests': '500/m', 'tokens': '200000/m'} (a unit may be {'learn': '20000/m'}; "
    "the older {'rate': '500/m'} is a budget of requests)"
)


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    budgets: Mapping[str, ProviderBudget]
    # Counts a prompt's tokens (a tokenizer); None: the documented estimate.
    token_counter: Callable[[str], int] | None
    # Retries to a provider, fleet-wide, as a share of first attempts; None: unlimited.
    retry_budget: RetryBudget | None
    # Budgets shared between tenants in fair shares while saturated (``fair_share.py``).
    fair: frozenset[str] = frozenset()


def read_provider_settings(read: SettingsReader) -> ProviderSettings:
    counter_setting, counter = read("token_counter")
    budgets = _providers(*read("providers", {}))
    return ProviderSettings(
        budgets=MappingProxyType(budgets),
        fair=_fair(*read("fair_providers", []), budgets),
        token_counter=None
        if counter is None
        else callable_or_path(counter_setting, counter, "a callable taking a text and returning its tokens"),
        retry_budget=_retry_budget(*read("retry_budget", {})),
    )


def _fair(setting: str, value: object, budgets: Mapping[str, ProviderBudget]) -> frozenset[str]:
    """A list of provider names, each a budget of ``resilience_providers``."""
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ConfigurationError(setting, "a list of provider names from resilience_providers", value)
    for name in value:
        if name not in budgets:
            raise ConfigurationError(
                setting, f"a provider budget configured in resilience_providers {sorted(budgets)}", name
            )
    return frozenset(value)


def _retry_budget(setting: str, value: object) -> RetryBudget | None:
    """``{"ratio": 0.1, "window": 10, "minimum": 3}`` (each optional), or False for no budget."""
    if value is False:
        return None
    given = mapping(setting, value)
    unknown = set(given) - {"ratio", "window", "minimum"}
    if unknown:
        raise ConfigurationError(setting, "a mapping of 'ratio', 'window' and 'minimum', or False", value)
    default = RetryBudget()
    return RetryBudget(
        ratio=share(f"{setting}['ratio']", given.get("ratio", default.ratio)),
        window=seconds(f"{setting}['window']", given.get("window", default.window), positive=True),
        minimum=integer(f"{setting}['minimum']", given.get("minimum", default.minimum), low=0),
    )


def _providers(setting: str, value: object) -> dict[str, ProviderBudget]:
    budgets: dict[str, ProviderBudget] = {}
    for name, given in named(setting, value).items():
        where = f"{setting}[{name!r}]"
        if not isinstance(given, Mapping):
            raise ConfigurationError(where, _EXAMPLE, given)
        if "rate" in given:  # the older spelling: requests alone
            if set(given) - {"rate", "burst"}:
                raise ConfigurationError(where, "'rate' alone; with other units, spell it 'requests'", given)
            budgets[name] = ProviderBudget(((REQUESTS, _unit(where, given)),))
            continue
        unknown = set(given) - set(UNITS)
        if unknown or not given:
            raise ConfigurationError(where, f"{_EXAMPLE}; units: {', '.join(UNITS)}", given)
        budgets[name] = ProviderBudget(
            tuple((unit, _unit(f"{where}[{unit!r}]", given[unit])) for unit in UNITS if unit in given)
        )
    return budgets


def _unit(where: str, value: object) -> UnitBudget:
    """A unit's budget: ``"200000/m"``, ``{"rate": "200000/m"}``, or ``{"learn": "20000/m"}``
    (learned from the provider, starting from that guess)."""
    if not isinstance(value, Mapping):
        return UnitBudget(_rate(where, value))
    if "burst" in value:
        raise ConfigurationError(
            f"{where}['burst']",
            "no burst: a unit is a sliding window, as the provider counts it, and any window of "
            "the period may hold up to the whole count (remove 'burst')",
            value["burst"],
        )
    if "learn" in value:
        if set(value) != {"learn"}:
            raise ConfigurationError(where, "{'learn': '<starting rate>'} alone", value)
        return UnitBudget(_rate(f"{where}['learn']", value["learn"]), learned=True)
    if set(value) != {"rate"}:
        raise ConfigurationError(where, "a rate like '1000/m', or {'rate': '1000/m'}", value)
    return UnitBudget(_rate(f"{where}['rate']", value["rate"]))


def _rate(setting: str, given: object) -> Rate:
    rate = parse(setting, given)
    if rate.count < 1:
        raise ConfigurationError(setting, "at least one per period", given)
    return rate
