"""Fallback chains: what answers when the primary cannot.

A chain is an ordered list of steps, from the task's ``fallbacks`` attribute or
``resilience_fallbacks`` (by task name, else by breaker name):
- a task, named or as a signature: another provider (an ``AITask`` with a breaker of its
  own), a rule-based answer, anything the user writes. It runs inline in the worker,
  so its own breaker and quota still guard it;
- ``"cached_similar"``: the semantic cache, under the failed task's name;
- ``"template"``: ``resilience_templates[task]`` formatted with the call's arguments.

The first step that answers wins, as a ``FallbackResult`` saying which step it was, how
far to trust it, why the primary was not used and what was tried before. The failure's
category decides which kinds of step may run (``resilience_fallback_policy``): a bad
request reaches nothing that calls a provider; a content-policy refusal skips other
providers unless configured; steps behind the failing breaker are skipped. If no step
answers, ``FallbackExhausted`` names every step and why.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ResilienceError
from .fallback_result import DEFAULT_CONFIDENCE, FallbackKind, FallbackResult

__all__ = [
    "FallbackExhausted",
    "DEFAULT_FALLBACK_POLICY",
    "STEP_KINDS",
    "run_chain",
    "call_arguments",
    "format_template",
    "FALLBACK",
    "FALLBACK_EXHAUSTED",
    "fallback_field",
]

CACHED_SIMILAR = "cached_similar"
TEMPLATE = "template"
PROVIDER = "provider"
STEP_KINDS = (PROVIDER, CACHED_SIMILAR, FallbackKind.RULE_BASED, TEMPLATE)
CIRCUIT_OPEN = "circuit_open"

# Metric counters, counted by the runner where the chain ends: ``fallback:<kind>`` per
# answer, ``fallback_exhausted`` when no step answered.
FALLBACK = "fallback"
FALLBACK_EXHAUSTED = "fallback_exhausted"


def fallback_field(kind: str) -> str:
    return f"{FALLBACK}:{kind}"


_EVERYTHING = STEP_KINDS
_NO_PROVIDER = (CACHED_SIMILAR, FallbackKind.RULE_BASED, TEMPLATE)
# Which kinds of step may answer for each reason the primary failed.
DEFAULT_FALLBACK_POLICY: Mapping[str, Sequence[str]] = {
    "circuit_open": _EVERYTHING,
    "rate_limit": _EVERYTHING,
    "quota_exhausted": _EVERYTHING,
    "timeout": _EVERYTHING,
    "connection": _EVERYTHING,
    "server_error": _EVERYTHING,
    "overloaded": _EVERYTHING,
    "context_window": _EVERYTHING,
    "auth": _EVERYTHING,
    "other": _EVERYTHING,
    "expired": _EVERYTHING,
    "bad_request": _NO_PROVIDER,
    "content_policy": _NO_PROVIDER,
}


class FallbackExhausted(ResilienceError):
    """Every step of a fallback chain failed or was skipped; ``attempts`` says each and why."""

    def __init__(self, task: str, reason: str, attempts: list[dict[str, str]]):
        super().__init__(task, reason, attempts)
        self.task = task
        self.reason = reason
        self.attempts = attempts

    def __str__(self) -> str:
        steps = "; ".join(f"{a['step']}: {a['error']}" for a in self.attempts) or "no steps configured"
        return f"{self.task} failed ({self.reason}) and no fallback answered: {steps}"


def call_arguments(run: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (for templates, cache prompts and parameters)."""
    try:
        bound = inspect.signature(run).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return dict(kwargs)
    return dict(bound.arguments)


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def format_template(template: str, arguments: Mapping[str, Any]) -> str:
    """``{name}`` placeholders from the call's arguments; unknown ones stay as written."""
    return string.Formatter().vformat(template, (), _Missing(arguments))


def run_chain(
    app: Any,
    task_name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    reason: str,
    category: str,
    failed_breaker: str | None,
) -> FallbackResult:
    """Run ``task_name``'s chain in order; return the first answer or raise ``FallbackExhausted``."""
    from .extension import Resilience

    resilience = Resilience.of(app)
    settings = resilience.settings.fallbacks
    task = app.tasks[task_name]
    steps = settings.chain_for(task_name, getattr(task, "breaker", None), getattr(task, "fallbacks", None))
    allowed = settings.policy.get(category, _EVERYTHING)
    arguments = call_arguments(task.run, args, kwargs)
    attempts: list[dict[str, str]] = []

    def answer(value: Any, kind: str, confidence: float, source: str) -> FallbackResult:
        if isinstance(value, FallbackResult):  # a step may state its own kind and confidence
            result = FallbackResult(
                value.value, value.kind, value.confidence, value.source or source, reason, attempts
            )
        else:
            result = FallbackResult(value, kind, confidence, source, reason, attempts)
        resilience.record({fallback_field(result.kind): 1})
        return result

    for step in steps:
        name = step if isinstance(step, str) else str(step.get("task", step))
        kind = _kind(app, step)
        if kind not in allowed:
            attempts.append({"step": name, "error": f"skipped: a {kind} step cannot help with {category}"})
            continue
        try:
            if step == CACHED_SIMILAR:
                hit = _cached(resilience, task, task_name, arguments)
                if hit is None:
                    attempts.append(
                        {"step": name, "error": "no cached answer similar enough and good enough"}
                    )
                    continue
                return answer(hit.answer, FallbackKind.CACHED_SIMILAR, hit.quality, CACHED_SIMILAR)
            if step == TEMPLATE:
                template = settings.templates.get(task_name)
                if template is None:
                    attempts.append({"step": name, "error": "no template configured in resilience_templates"})
                    continue
                confidence = DEFAULT_CONFIDENCE[FallbackKind.TEMPLATE]
                return answer(
                    format_template(template, arguments), FallbackKind.TEMPLATE, confidence, TEMPLATE
                )
            step_task, step_args, step_kwargs = _resolve(app, step, args, kwargs)
            breaker = getattr(step_task, "breaker", None)
            if breaker is not None and breaker == failed_breaker:
                attempts.append({"step": name, "error": f"skipped: behind the failing breaker {breaker!r}"})
                continue
            call = getattr(step_task, "call_guarded", step_task)
            value = call(*step_args, **step_kwargs)
            result_kind = FallbackKind.ALTERNATIVE_PROVIDER if kind == PROVIDER else FallbackKind.RULE_BASED
            confidence = float(getattr(step_task, "fallback_confidence", DEFAULT_CONFIDENCE[result_kind]))
            return answer(value, result_kind, confidence, step_task.name)
        except Exception as error:  # every failure is recorded and the next step tried
            attempts.append({"step": name, "error": f"{type(error).__name__}: {error}"})
    resilience.record({FALLBACK_EXHAUSTED: 1})
    raise FallbackExhausted(task_name, reason, attempts)


def _kind(app: Any, step: Any) -> str:
    if step in (CACHED_SIMILAR, TEMPLATE):
        return str(step)
    name = step if isinstance(step, str) else step.get("task")
    task = app.tasks.get(name)
    if task is None:
        return FallbackKind.RULE_BASED
    declared = getattr(task, "fallback_kind", None)
    if declared is not None:
        return str(declared)
    return PROVIDER if getattr(task, "breaker", None) is not None else FallbackKind.RULE_BASED


def _resolve(
    app: Any, step: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """A step named by task name gets the call's arguments; a signature brings its own."""
    if isinstance(step, str):
        if step not in app.tasks:
            raise LookupError(f"no task named {step!r} is registered")
        return app.tasks[step], tuple(args), dict(kwargs)
    task = app.tasks[step["task"]]
    step_args = tuple(step.get("args") or args)
    return task, step_args, {**kwargs, **(step.get("kwargs") or {})}


def _cached(resilience: Any, task: Any, task_name: str, arguments: Mapping[str, Any]) -> Any:
    prompt_name = getattr(task, "cache_prompt", None)
    if prompt_name is None or prompt_name not in arguments:
        return None
    params = {name: arguments.get(name) for name in getattr(task, "cache_match", ())}
    return resilience.cache.lookup(task_name, params, str(arguments[prompt_name]))
