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
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..errors import FallbackExhausted
from ..monitoring.counters import Count, count_fallback, count_fallback_exhausted, count_handled
from .cache import CacheHit, SemanticCache
from .result import DEFAULT_CONFIDENCE, FallbackKind, FallbackResult
from .settings import CACHED_SIMILAR, PROVIDER, STEP_KINDS, TEMPLATE, FallbackSettings

__all__ = ["FallbackRunner", "call_arguments", "format_template"]


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


class _Skipped(Exception):
    """A step that does not apply to this request: recorded as its reason, the next is tried."""


@dataclass
class _Run:
    """One request's walk along its chain."""

    task_name: str
    task: Any
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    reason: str
    category: str
    failed_breaker: str | None
    arguments: dict[str, Any]
    attempts: list[dict[str, str]] = field(default_factory=list)


class FallbackRunner:
    """Runs a task's chain; ``tasks`` looks a registered task up by name (``app.tasks.get``).

    A task step runs inside ``step_scope(step)``: what it raises is the chain's to handle,
    so the error reporting that would take it for a task failure is told otherwise there.
    Each step that fails is counted as handled (per step and the error's category).
    """

    def __init__(
        self,
        settings: FallbackSettings,
        tasks: Callable[[str], Any],
        cache: SemanticCache,
        count: Count,
        step_scope: Callable[[str], AbstractContextManager[object]] = lambda _: nullcontext(),
        category: Callable[[BaseException], str] = lambda error: type(error).__name__,
    ) -> None:
        self.settings = settings
        self._task = tasks
        self._cache = cache
        self._count = count
        self._step_scope = step_scope
        self._category = category

    def chain(self, task: Any) -> tuple[Any, ...]:
        """The task's chain: configured by task name, else by breaker name, else its own."""
        return self.settings.chain_for(
            task.name, getattr(task, "breaker", None), getattr(task, "fallbacks", None)
        )

    def run(
        self,
        task_name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        reason: str,
        category: str,
        failed_breaker: str | None,
    ) -> FallbackResult:
        """Run ``task_name``'s chain in order; return the first answer or raise ``FallbackExhausted``."""
        task = self._task(task_name)
        if task is None:
            raise LookupError(f"no task named {task_name!r} is registered")
        walk = _Run(
            task_name,
            task,
            args,
            kwargs,
            reason,
            category,
            failed_breaker,
            call_arguments(task.run, args, kwargs),
        )
        allowed = self.settings.policy.get(category, STEP_KINDS)
        for step in self.chain(task):
            name = step if isinstance(step, str) else str(step.get("task", step))
            kind = self._kind(step)
            try:
                if kind not in allowed:
                    raise _Skipped(f"skipped: a {kind} step cannot help with {category}")
                result = self._answer(walk, step, kind)
            except Exception as error:  # every failure is recorded and the next step tried
                skipped = isinstance(error, _Skipped)
                text = str(error) if skipped else f"{type(error).__name__}: {error}"
                walk.attempts.append({"step": name, "error": text})
                if not skipped:
                    count_handled(self._count, name, self._category(error))
                continue
            count_fallback(self._count, result.kind)
            return result
        count_fallback_exhausted(self._count)
        raise FallbackExhausted(task_name, reason, walk.attempts)

    def _answer(self, walk: _Run, step: Any, kind: str) -> FallbackResult:
        if step == CACHED_SIMILAR:
            hit = self._cached(walk)
            if hit is None:
                raise _Skipped("no cached answer similar enough and good enough")
            return self._result(
                walk, hit.answer, FallbackKind.CACHED_SIMILAR, hit.quality, CACHED_SIMILAR, hit.question
            )
        if step == TEMPLATE:
            template = self.settings.templates.get(walk.task_name)
            if template is None:
                raise _Skipped("no template configured in resilience_templates")
            answer = format_template(template, walk.arguments)
            return self._result(
                walk, answer, FallbackKind.TEMPLATE, DEFAULT_CONFIDENCE[FallbackKind.TEMPLATE], TEMPLATE
            )
        step_task, step_args, step_kwargs = self._resolve(step, walk.args, walk.kwargs)
        breaker = getattr(step_task, "breaker", None)
        if breaker is not None and breaker == walk.failed_breaker:
            raise _Skipped(f"skipped: behind the failing breaker {breaker!r}")
        call = getattr(step_task, "call_guarded", step_task)
        with self._step_scope(step_task.name):
            value = call(*step_args, **step_kwargs)
        result_kind = FallbackKind.ALTERNATIVE_PROVIDER if kind == PROVIDER else FallbackKind.RULE_BASED
        confidence = float(getattr(step_task, "fallback_confidence", DEFAULT_CONFIDENCE[result_kind]))
        return self._result(walk, value, result_kind, confidence, step_task.name)

    @staticmethod
    def _result(
        walk: _Run, value: Any, kind: str, confidence: float, source: str, question: str | None = None
    ) -> FallbackResult:
        if isinstance(value, FallbackResult):  # a step may state its own kind and confidence
            return FallbackResult(
                value.value,
                value.kind,
                value.confidence,
                value.source or source,
                walk.reason,
                walk.attempts,
                value.question,
            )
        return FallbackResult(value, kind, confidence, source, walk.reason, walk.attempts, question)

    def _kind(self, step: Any) -> str:
        if step in (CACHED_SIMILAR, TEMPLATE):
            return str(step)
        task = self._task(step if isinstance(step, str) else step.get("task"))
        if task is None:
            return FallbackKind.RULE_BASED
        declared = getattr(task, "fallback_kind", None)
        if declared is not None:
            return str(declared)
        return PROVIDER if getattr(task, "breaker", None) is not None else FallbackKind.RULE_BASED

    def _resolve(
        self, step: Any, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """A step named by task name gets the call's arguments; a signature brings its own."""
        name = step if isinstance(step, str) else step["task"]
        task = self._task(name)
        if task is None:
            raise LookupError(f"no task named {name!r} is registered")
        if isinstance(step, str):
            return task, tuple(args), dict(kwargs)
        return task, tuple(step.get("args") or args), {**kwargs, **(step.get("kwargs") or {})}

    def _cached(self, walk: _Run) -> CacheHit | None:
        prompt_name = getattr(walk.task, "cache_prompt", None)
        if prompt_name is None or prompt_name not in walk.arguments:
            return None
        params = {name: walk.arguments.get(name) for name in getattr(walk.task, "cache_match", ())}
        return self._cache.lookup(walk.task_name, params, str(walk.arguments[prompt_name]))
