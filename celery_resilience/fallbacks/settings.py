"""Validation of the fallback settings: chains, templates, policy and the semantic cache."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import ConfigurationError
from ..validation import SettingsReader, import_dotted
from .cache import Judge
from .evidence import same_answer
from .minilm import MiniLMEmbedder
from .result import FallbackKind
from .similarity import Embedder
from .wordllama import WordLlamaEmbedder

__all__ = [
    "FallbackSettings",
    "read_fallback_settings",
    "check_steps",
    "BUILT_IN_STEPS",
    "CACHED_SIMILAR",
    "TEMPLATE",
    "PROVIDER",
    "STEP_KINDS",
    "CIRCUIT_OPEN",
    "EXPIRED",
    "THROTTLED",
    "SHED",
    "DEFAULT_FALLBACK_POLICY",
]

# The built-in steps, and the kinds of step the policy speaks of (a task step is a
# provider when it has a breaker, else rule-based, unless it declares its kind).
CACHED_SIMILAR = "cached_similar"
TEMPLATE = "template"
PROVIDER = "provider"
STEP_KINDS = (PROVIDER, CACHED_SIMILAR, FallbackKind.RULE_BASED, TEMPLATE)
# Reasons to fall back besides the failure categories of ``classify``.
CIRCUIT_OPEN = "circuit_open"
EXPIRED = "expired"
# Refused by admission under the ``answer`` strategy: answered at once, and only by steps
# that call no provider (the provider is what the overload protects).
THROTTLED = "throttled"
# Dequeued past its deadline in an overloaded queue (load/sojourn.py): answered, like a
# refusal, by steps that call no provider, so that the worker is free at once.
SHED = "shed"

_EVERYTHING = STEP_KINDS
_NO_PROVIDER = (CACHED_SIMILAR, FallbackKind.RULE_BASED, TEMPLATE)
# Which kinds of step may answer for each reason the primary failed.
DEFAULT_FALLBACK_POLICY: Mapping[str, Sequence[str]] = {
    CIRCUIT_OPEN: _EVERYTHING,
    "rate_limit": _EVERYTHING,
    "quota_exhausted": _EVERYTHING,
    "timeout": _EVERYTHING,
    "connection": _EVERYTHING,
    "server_error": _EVERYTHING,
    "overloaded": _EVERYTHING,
    "context_window": _EVERYTHING,
    "auth": _EVERYTHING,
    "other": _EVERYTHING,
    EXPIRED: _EVERYTHING,
    THROTTLED: _NO_PROVIDER,
    SHED: _NO_PROVIDER,
    "bad_request": _NO_PROVIDER,
    "content_policy": _NO_PROVIDER,
}

Step = "str | Mapping[str, Any]"
_CACHE_DEFAULTS: dict[str, float] = {
    # Low: similarity only finds candidates; the quality gate decides (benchmarks/cache_quality.py).
    "similarity": 0.3,
    "quality": 0.6,
    "ttl": 86_400.0,
    "max_age": 604_800.0,
    "max_entries": 10_000.0,
    # The estimated error an entry may have and still answer (evidence.py).
    "max_error": 0.02,
}
# The share of the provider's answers also looked up in the cache, to judge what the cache
# would have served (0: never; the entries then serve on the gate alone).
_SHADOW_SHARE = 0.1


@dataclass(frozen=True)
class FallbackSettings:
    chains: Mapping[str, tuple[Any, ...]]
    templates: Mapping[str, str]
    policy: Mapping[str, tuple[str, ...]]
    cache_similarity: float
    cache_quality: float
    cache_ttl: float
    cache_max_age: float
    cache_max_entries: int
    cache_max_error: float
    cache_shadow_share: float
    embedder: Embedder | None
    judge: Judge

    def chain_for(self, task: str, breaker: str | None, default: Sequence[Any] | None) -> tuple[Any, ...]:
        """The task's chain: configured by task name, else by breaker name, else its own."""
        if task in self.chains:
            return self.chains[task]
        if breaker is not None and breaker in self.chains:
            return self.chains[breaker]
        return tuple(default or ())


BUILT_IN_STEPS = (CACHED_SIMILAR, TEMPLATE)


def check_steps(where: str, value: object) -> tuple[Any, ...]:
    """A chain's steps: task names, signatures (mappings with a ``task``) or the built-in
    steps. A bare word close to a built-in step (``"cache_similar"``) is a typo, not a
    task: it would never answer."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError(
            where, "a list of steps: task names, signatures, 'cached_similar', 'template'", value
        )
    for step in value:
        if not isinstance(step, str | Mapping) or (isinstance(step, Mapping) and "task" not in step):
            raise ConfigurationError(
                where, "steps that are task names, signatures or built-in step names", step
            )
        if isinstance(step, str) and step not in BUILT_IN_STEPS:
            close = difflib.get_close_matches(step.lower(), BUILT_IN_STEPS, n=1, cutoff=0.7)
            if close:
                raise ConfigurationError(
                    where,
                    f"task names or the built-in steps {list(BUILT_IN_STEPS)} (did you mean {close[0]!r}?)",
                    step,
                )
    return tuple(value)


def read_fallback_settings(read: SettingsReader) -> FallbackSettings:
    setting, chains_raw = read("fallbacks", {})
    if not isinstance(chains_raw, Mapping):
        raise ConfigurationError(setting, "a mapping of task or breaker name to a list of steps", chains_raw)
    chains = {str(k): check_steps(f"{setting}[{k!r}]", v) for k, v in chains_raw.items()}
    setting, templates = read("templates", {})
    if not isinstance(templates, Mapping) or not all(isinstance(t, str) for t in templates.values()):
        raise ConfigurationError(setting, "a mapping of task name to a template string", templates)
    policy = _policy(*read("fallback_policy", {}))
    numbers, embedder, judge = _cache(*read("semantic_cache", {}))
    return FallbackSettings(
        chains=MappingProxyType(chains),
        templates=MappingProxyType(dict(templates)),
        policy=MappingProxyType(policy),
        cache_similarity=numbers["similarity"],
        cache_quality=numbers["quality"],
        cache_ttl=numbers["ttl"],
        cache_max_age=numbers["max_age"],
        cache_max_entries=int(numbers["max_entries"]),
        cache_max_error=numbers["max_error"],
        cache_shadow_share=numbers["shadow_share"],
        embedder=embedder,
        judge=judge,
    )


def _policy(setting: str, overrides: object) -> dict[str, tuple[str, ...]]:
    policy = {category: tuple(kinds) for category, kinds in DEFAULT_FALLBACK_POLICY.items()}
    if not isinstance(overrides, Mapping):
        raise ConfigurationError(setting, "a mapping of failure category to step kinds", overrides)
    for category, kinds in overrides.items():
        if category not in DEFAULT_FALLBACK_POLICY:
            raise ConfigurationError(setting, f"categories among {sorted(DEFAULT_FALLBACK_POLICY)}", category)
        if isinstance(kinds, str) or not isinstance(kinds, Sequence) or not set(kinds) <= set(STEP_KINDS):
            raise ConfigurationError(
                f"{setting}[{category!r}]", f"a list of kinds among {list(STEP_KINDS)}", kinds
            )
        policy[category] = tuple(kinds)
    return policy


def _cache(setting: str, cache: object) -> tuple[dict[str, float], Embedder | None, Judge]:
    allowed = set(_CACHE_DEFAULTS) | {"embedder", "shadow_share", "judge"}
    if not isinstance(cache, Mapping) or set(cache) - allowed:
        raise ConfigurationError(setting, f"a mapping with keys among {sorted(allowed)}", cache)
    numbers: dict[str, float] = {}
    for key, default in _CACHE_DEFAULTS.items():
        number = cache.get(key, default)
        if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
            raise ConfigurationError(f"{setting}[{key!r}]", "a number > 0", number)
        numbers[key] = float(number)
    for key in ("similarity", "quality", "max_error"):
        if numbers[key] > 1:
            raise ConfigurationError(f"{setting}[{key!r}]", "a score in (0, 1]", numbers[key])
    share = cache.get("shadow_share", _SHADOW_SHARE)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigurationError(f"{setting}['shadow_share']", "a share in [0, 1]", share)
    numbers["shadow_share"] = float(share)
    return numbers, _embedder(setting, cache.get("embedder")), _judge(setting, cache.get("judge"))


def _embedder(setting: str, embedder: object) -> Embedder | None:
    if embedder == "hashing":
        return None
    if embedder == "minilm":
        return MiniLMEmbedder(f"{setting}['embedder']")
    if embedder == "wordllama":
        return WordLlamaEmbedder(f"{setting}['embedder']")
    if isinstance(embedder, str):
        embedder = import_dotted(f"{setting}['embedder']", embedder)
    if embedder is not None and not callable(embedder):
        raise ConfigurationError(f"{setting}['embedder']", "a callable taking a text", embedder)
    return embedder


def _judge(setting: str, judge: object) -> Judge:
    if judge is None:
        return same_answer
    if isinstance(judge, str):
        judge = import_dotted(f"{setting}['judge']", judge)
    if not callable(judge):
        raise ConfigurationError(
            f"{setting}['judge']", "a callable taking the cached and the fresh answer", judge
        )
    return judge
