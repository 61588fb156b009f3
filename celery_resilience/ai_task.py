"""``AITask``: a ``ResilientTask`` whose calls to one dependency go through its breaker.

On the worker, each run:
1. takes one call from the provider's quota (``resilience_providers``); a spent budget
   runs the task again after the wait it names, without calling the provider, counting
   a failure or using up ``max_retries``;
2. asks the breaker (``resilience_breakers[breaker]``) for a permit; an open breaker
   fails the task at once with ``CircuitOpen``;
3. runs the task, classifies any exception, records the outcome (a call that overran
   ``call_timeout`` counts as a timeout), drains the provider's quota on a 429, and
   retries retryable failures (timeouts, connection errors, rate limits, overload) after
   the provider's ``Retry-After`` or an exponential back-off, up to ``max_retries``.

With a fallback chain, two waits end in the chain instead of going on: a request that
admission queued with an expiry (``queue_with_timeout``) and that reaches a worker past
it is answered by the chain (category ``expired``), and a request that has waited for the
provider's budget longer than ``quota_wait_limit`` seconds since it was admitted is
answered by the chain (category ``rate_limit``: another provider, a cached answer, rules).

The task's retry policy is the one retry loop: turn the provider SDK's own retries off
inside an ``AITask`` (``max_retries=0`` on the OpenAI and Anthropic clients), or every
failure is retried by both and the breaker sees a fraction of them.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from celery.exceptions import Ignore

from .admission.gate import Verdict
from .answering import answer_refused
from .breakers.classification import Category, Classification
from .breakers.client import Call
from .breakers.decision import Next, after_failure
from .breakers.machine import BreakerState
from .errors import CircuitOpen, ConfigurationError, FallbackExhausted, StoreUnavailable, Throttled
from .extension import FALLBACK_TASK, Resilience
from .fallbacks.chain import call_arguments
from .fallbacks.settings import CIRCUIT_OPEN, EXPIRED, SHED, check_steps
from .monitoring.counters import count_cache_check, count_expired, count_handled, count_retry_refused
from .monitoring.sentry import handled_errors
from .providers.quota import Reservation, reserved_for
from .publishing import HEADER, apply_countdown
from .settings import ResilienceSettings
from .shedding import answer_shed, feeds_later_steps, shed_reason
from .task import ResilientTask
from .validation import choice

__all__ = ["AITask"]

logger = logging.getLogger("celery_resilience.ai_task")


# Short waits held in a row before the call is run again later instead.
_MOST_HOLDS = 3


class _FallBack(Exception):
    """Before the call: hand the request to its fallback chain, for ``reason``."""

    def __init__(self, reason: str, category: str) -> None:
        super().__init__(reason)
        self.reason, self.category = reason, category


class AITask(ResilientTask):
    """Set ``breaker = "<dependency>"`` (and optionally ``provider``) on the task.

    ``fallbacks`` is the chain that answers when the provider cannot (see
    ``celery_resilience.fallback``); ``cache_prompt`` names the argument holding the
    prompt, so successful answers fill the semantic cache; ``cache_match`` names the
    arguments that must match exactly for a cached answer to be served.
    """

    breaker: str | None = None
    provider: str | None = None
    # The nth retry waits ``retry_delay_base ** n`` seconds (at most ``retry_backoff_max``)
    # unless the provider named a wait. Not Celery's ``retry_backoff``, a switch and factor
    # for ``autoretry_for``, which this task's retries do not use.
    retry_delay_base: float = 2.0
    retry_backoff_max: float = 300.0
    fallbacks: Sequence[Any] = ()
    cache_prompt: str | None = None
    cache_match: Sequence[str] = ()
    quota_wait_limit: float | None = None
    # A spent budget whose wait is this short (seconds) holds the worker until it is over,
    # instead of running the task again later. 0 (the default) always runs it again later:
    # a held slot serves nobody else, which costs more than a republish in small pools.
    quota_hold: float = 0.0
    # For a provider budget counting tokens: the parameter holding the prompt's text
    # (default: ``cache_prompt``) and the output cap asked of the provider (a call's own
    # ``max_tokens`` argument wins; neither: the task's observed high percentile).
    prompt_param: str | None = None
    max_tokens: int | None = None
    # Expected outcomes, not bugs: Celery logs them without a traceback and error trackers
    # (Sentry's Celery integration reads ``throws``) do not report each one. An open
    # breaker or a spent budget is watched through the metrics and the alert rules.
    throws: tuple[type[Exception], ...] = (Throttled, CircuitOpen)

    @classmethod
    def check_configuration(cls, settings: ResilienceSettings) -> None:
        super().check_configuration(settings)
        breakers, providers = settings.breakers.policies, settings.providers.budgets
        if cls.breaker is not None:
            choice(
                f"{cls.name}.breaker",
                cls.breaker,
                breakers,
                f"a breaker configured in resilience_breakers {sorted(breakers)}",
            )
        if cls.provider is not None:
            choice(
                f"{cls.name}.provider",
                cls.provider,
                providers,
                f"a provider budget configured in resilience_providers {sorted(providers)}",
            )
        check_steps(f"{cls.name}.fallbacks", list(cls.fallbacks))
        parameters = inspect.signature(cls.run).parameters
        for attribute, names in (
            ("cache_prompt", [cls.cache_prompt]),
            ("prompt_param", [cls.prompt_param]),
            ("cache_match", list(cls.cache_match)),
        ):
            for name in names:
                if name is not None and name not in parameters:
                    raise ConfigurationError(
                        f"{cls.name}.{attribute}", f"parameters of the task {list(parameters)}", name
                    )

    def _chain(self) -> tuple[Any, ...]:
        return Resilience.of(self.app).fallbacks.chain(self)

    def _publish(self, args: Any, kwargs: Any, options: dict[str, Any]) -> Any:
        """With the breaker already open, publish the fallback chain instead, under the same
        id; a call whose tokens the provider's budget cannot serve within the horizon is
        refused (or answered by its chain) before it waits in the queue, and one it can
        serve later is delayed until its turn."""
        resilience = Resilience.of(self.app)
        if self.breaker is not None and self._chain():
            state = resilience.breakers.state(self.breaker)
            if state in (BreakerState.OPEN, BreakerState.FORCED_OPEN):
                reason = f"breaker {self.breaker!r} is {state.value}"
                return self._publish_fallback(args, kwargs, options, reason, CIRCUIT_OPEN)
        provider = self._provider(resilience)
        if provider is not None and resilience.quota.counts_tokens(provider) and not self._rerun(options):
            refused = self._book(resilience, provider, args, kwargs, options)
            if refused is not None:
                return self._publish_fallback(args, kwargs, options, refused, Category.RATE_LIMIT.value)
        return super()._publish(args, kwargs, options)

    def _publish_fallback(
        self, args: Any, kwargs: Any, options: dict[str, Any], reason: str, category: str
    ) -> Any:
        runner = self.app.tasks[FALLBACK_TASK]
        payload = (self.name, list(args or ()), dict(kwargs or {}), reason, category, self.breaker)
        options.pop("shadow", None)
        return runner.apply_async(payload, **options)

    def _rerun(self, options: dict[str, Any]) -> bool:
        """This publish runs the request being worked on again (a retry, a wait for the
        budget): it keeps the turn it booked when it was first published."""
        running = self.app.current_worker_task
        request_id = getattr(getattr(running, "request", None), "id", None)
        return request_id is not None and options.get("task_id") == request_id

    def _book(
        self, resilience: Resilience, provider: str, args: Any, kwargs: Any, options: dict[str, Any]
    ) -> str | None:
        """Book the call's tokens on the provider's timetable: delay the publish until its
        turn, or return why it cannot be served in time (with a chain to answer it; without
        one, ``Throttled`` reaches the caller). What is booked is what is known before the
        call: the prompt and the output cap, if the call names one. An uncapped output is
        booked when the provider has counted it (reconciliation): booking a high
        percentile for every queued call would space their turns by it and leave the
        provider idle."""
        input_tokens, output_tokens = self._estimate(resilience, provider, args, kwargs, uncapped=0.0)
        if input_tokens == 0:
            return None  # no prompt to estimate from: the worker's check alone
        horizon = self.quota_wait_limit
        if horizon is None:
            horizon = resilience.settings.admission.max_throttle_delay
        booked, wait = resilience.quota.book(provider, input_tokens, output_tokens, horizon)
        if booked is not None:
            apply_countdown(options, wait, resilience.clock.now())
            context = (options.get("headers") or {}).get(HEADER)
            if booked and isinstance(context, dict):
                context["booked"] = booked  # the worker's reconciliation corrects it
                if wait > 0:  # held back at enqueue: a learned budget may grow on its success
                    context["paced"] = True
            return None
        reason = f"the {provider!r} budget cannot serve it within {horizon:g}s"
        if not self._chain():
            raise Throttled(wait, self.name, reason=reason)
        return reason

    def fair_cost(self, args: Any, kwargs: Any) -> float:
        """The tokens the call reserves from a budget counting tokens (as VTC charges an
        LLM's tenants), else one task."""
        resilience = Resilience.of(self.app)
        provider = self._provider(resilience)
        if provider is None or not resilience.quota.counts_tokens(provider):
            return 1.0
        input_tokens, output_tokens = self._estimate(resilience, provider, args, kwargs)
        return max(1.0, input_tokens + output_tokens)

    def _estimate(
        self, resilience: Resilience, provider: str, args: Any, kwargs: Any, uncapped: float | None = None
    ) -> tuple[float, float]:
        """The call's input and output tokens, from its prompt and its cap (without a cap,
        ``uncapped``, else the task's observed high percentile of output)."""
        arguments = call_arguments(self.run, args or (), kwargs or {})
        prompt = arguments.get(self.prompt_param or self.cache_prompt or "")
        asked = arguments.get("max_tokens", self.max_tokens)
        if not isinstance(asked, int | float) and uncapped is not None:
            asked = uncapped
        return resilience.quota.estimate(
            provider,
            self.name,
            None if prompt is None else str(prompt),
            float(asked) if isinstance(asked, int | float) else None,
        )

    def _schedule(
        self, resilience: Resilience, options: dict[str, Any], verdict: Verdict, header: dict[str, Any]
    ) -> None:
        """With a fallback chain, the expiry travels in the header: a request that reaches a
        worker past it is answered by the chain, not revoked. The admission time goes with
        every request, for ``quota_wait_limit`` and the queue's sojourn (shedding)."""
        now = resilience.clock.now()
        header["at"] = round(now, 3)
        if not self._chain():
            super()._schedule(resilience, options, verdict, header)
            return
        apply_countdown(options, verdict.countdown, now)
        if verdict.expires is not None:
            header["expires_at"] = round(now + verdict.expires, 3)

    def answer_from_fallbacks(self, reason: str, category: str = "other") -> Any:
        """From inside the task: hand this request to its fallback chain now, under the same
        task id, when the task knows its own path cannot answer (a saturated database, a
        missing input the provider needs). ``category`` picks the steps that may run
        (``resilience_fallback_policy``). Nothing is recorded against the breaker.
        Called inline (as a fallback step itself), it raises ``FallbackExhausted``: the
        chain running it moves on to its next step."""
        if self.request.called_directly or not self._chain():
            raise FallbackExhausted(self.name, reason, [])
        return self._fall_back(self.request.args or (), self.request.kwargs or {}, reason, category)

    def _fall_back(self, args: Any, kwargs: Any, reason: str, category: str) -> Any:
        """Hand over to the fallback chain under this task's id (the caller's result gets its answer)."""
        runner = self.app.tasks[FALLBACK_TASK]
        return self.replace(runner.s(self.name, list(args), dict(kwargs), reason, category, self.breaker))

    def apply_async(self, args: Any = None, kwargs: Any = None, *rest: Any, **options: Any) -> Any:
        if self.breaker is not None and self.soft_time_limit is None and "soft_time_limit" not in options:
            policy = Resilience.of(self.app).settings.breakers.policies.get(self.breaker)
            if policy is not None and policy.call_timeout is not None:
                # Enforced by pools that support time limits; every pool counts overruns.
                options["soft_time_limit"] = policy.call_timeout
        try:
            return super().apply_async(args, kwargs, *rest, **options)
        except Throttled as refused:
            if not refused.answerable:
                raise
            task_id = rest[0] if rest else options.get("task_id")
            return answer_refused(self, refused, args, kwargs, task_id, options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call_guarded(*args, **kwargs)

    def call_guarded(self, *args: Any, **kwargs: Any) -> Any:
        """The task's call behind its quota and breaker. Fallback chains call it for inline
        steps: a step's failure is handled by the chain (tried, recorded, the next step
        answers), so it must not reach error trackers that wrap ``__call__`` as a task
        failure would."""
        resilience = Resilience.of(self.app)
        provider = self._provider(resilience)
        if self.breaker is None and provider is None:
            return super().__call__(*args, **kwargs)
        direct = self.request.called_directly  # run inline, as a fallback step: no republishing
        can_fall_back = not direct and bool(self._chain())
        try:
            reservation, call = self._before_call(resilience, provider, args, kwargs, direct, can_fall_back)
        except _FallBack as fall:
            if fall.category == SHED:  # answered here: re-queued, it would wait behind the backlog
                return answer_shed(self, resilience, args, kwargs, fall.reason)
            return self._fall_back(args, kwargs, fall.reason, fall.category)
        dependency = provider or self.breaker or self.name
        if direct or not self.request.retries:
            resilience.retries.first_attempt(dependency)
        began = resilience.clock.monotonic()
        try:
            with reserved_for(reservation), self._reported(resilience, dependency, can_fall_back):
                result = super().__call__(*args, **kwargs)
        except BaseException as error:
            if reservation is not None:
                resilience.quota.give_back(reservation)  # unless a response settled it
            outcome = (
                resilience.breakers.record(call, error)
                if call is not None
                else resilience.breakers.classifier(error)
            )
            if outcome is None or outcome.category is Category.IGNORED or not isinstance(error, Exception):
                raise
            return self._after_failure(resilience, provider, outcome, error, args, kwargs, can_fall_back)
        # What an answered run takes: the run a shed decision foresees (shedding.py).
        resilience.sojourn.ran(self.name, resilience.clock.monotonic() - began)
        if call is not None:
            resilience.breakers.record(call, None)
        if provider is not None:
            resilience.quota.succeeded(provider, reservation)
        if self.cache_prompt is not None:
            self._remember_answer(resilience, args, kwargs, result)
        return result

    def _after_failure(
        self,
        resilience: Resilience,
        provider: str | None,
        outcome: Classification,
        error: Exception,
        args: Any,
        kwargs: Any,
        can_fall_back: bool,
    ) -> Any:
        """A failed call: spend the budget on a 429, then retry, fall back or raise, as
        ``breakers.decision.after_failure`` decides. What is handled is counted (per
        dependency and category) instead of being an error."""
        if provider is not None and outcome.category in (Category.RATE_LIMIT, Category.QUOTA_EXHAUSTED):
            resilience.quota.drain(provider, outcome.retry_after)
        step = after_failure(
            outcome,
            is_exception=True,
            direct=self.request.called_directly,
            retries_left=self._retries_left(),
            retry_allowed=lambda: self._retry_allowed(resilience, provider),
            can_fall_back=can_fall_back,
        )
        if step.handled:
            count_handled(resilience.record, provider or self.breaker or self.name, outcome.category.value)
        if step is Next.RETRY:
            backoff = min(self.retry_backoff_max, self.retry_delay_base ** (self.request.retries + 1))
            countdown = outcome.retry_after if outcome.retry_after is not None else backoff
            raise self.retry(exc=error, countdown=countdown) from error
        if step is Next.FALL_BACK:
            return self._fall_back(args, kwargs, f"{type(error).__name__}: {error}", outcome.category.value)
        raise error

    def _retries_left(self) -> bool:
        return self.max_retries is None or self.request.retries < self.max_retries

    def _reported(self, resilience: Resilience, dependency: str, can_fall_back: bool) -> Any:
        """The call's errors, as error reporting should see them: those this task will
        handle (the same decision as ``_after_failure``, assuming the retry budget has
        room: a retry it refuses falls back, or raises and is reported as the task's
        failure) are handled, not errors."""
        direct, retries_left = self.request.called_directly, self._retries_left()
        classify = resilience.breakers.classifier

        def handled(error: BaseException) -> str | None:
            outcome = classify(error)
            step = after_failure(
                outcome,
                is_exception=isinstance(error, Exception),
                direct=direct,
                retries_left=retries_left,
                retry_allowed=lambda: True,
                can_fall_back=can_fall_back,
            )
            return outcome.category.value if outcome is not None and step.handled else None

        return handled_errors(dependency, handled, resilience.settings.monitoring.sentry_handled)

    def _retry_allowed(self, resilience: Resilience, provider: str | None) -> bool:
        """The fleet's retry budget for this dependency has room for one more retry."""
        dependency = provider or self.breaker
        if dependency is None or resilience.retries.allow_retry(dependency):
            return True
        count_retry_refused(resilience.record, dependency)
        return False

    def _provider(self, resilience: Resilience) -> str | None:
        """The budget this task's calls draw from: its ``provider``, else its breaker's name
        when a budget of that name is configured."""
        if self.provider is not None:
            return self.provider
        return self.breaker if self.breaker in resilience.quota.providers else None

    def _remember_answer(self, resilience: Resilience, args: Any, kwargs: Any, result: Any) -> None:
        arguments = call_arguments(self.run, args, kwargs)
        prompt = arguments.get(self.cache_prompt or "")
        if prompt is None:
            return
        params = {name: arguments.get(name) for name in self.cache_match}
        cache, question = resilience.cache, str(prompt)
        try:
            vector = cache.embed(question)
            if random.random() < resilience.settings.fallbacks.cache_shadow_share:
                # The provider answered anyway: a free judgement of what the cache would serve.
                agreed = cache.check(self.name, params, question, result, vector)
                if agreed is not None:
                    count_cache_check(resilience.record, self.name, agreed)
            cache.put(self.name, params, question, result, vector)
        except StoreUnavailable as error:
            logger.debug("answer of %s not cached: %s", self.name, error)
        except (TypeError, ValueError) as error:
            # The answer is fine for the caller (any serializer) but not JSON: it is not cached.
            logger.debug("answer of %s not cached, JSON cannot hold it: %s", self.name, error)

    def _before_call(
        self,
        resilience: Resilience,
        provider: str | None,
        args: Any,
        kwargs: Any,
        direct: bool,
        can_fall_back: bool,
    ) -> tuple[Reservation | None, Call | None]:
        """The deadline, the provider's budget, then the breaker: what the call holds, or
        ``_FallBack`` with the reason to hand the request to its chain."""
        if can_fall_back and self._expired(resilience):
            count_expired(resilience.record)
            raise _FallBack("queued past its deadline", EXPIRED)
        shed = None if direct else shed_reason(self, resilience, self.resilience_context)
        if shed is not None:
            if can_fall_back and not feeds_later_steps(self.request):
                raise _FallBack(shed, SHED)
            raise Throttled(0.0, self.name, reason=shed)
        reservation = None
        if provider is not None:
            reservation = self._reserve(resilience, provider, args, kwargs, direct, can_fall_back)
        if self.breaker is None:
            return reservation, None
        try:
            return reservation, resilience.breakers.acquire(self.breaker)
        except CircuitOpen as refused:
            if reservation is not None:
                resilience.quota.give_back(reservation)
            if can_fall_back:
                raise _FallBack(str(refused), CIRCUIT_OPEN) from refused
            raise

    def _expired(self, resilience: Resilience) -> bool:
        deadline = self.resilience_context.get("expires_at")
        return isinstance(deadline, int | float) and resilience.clock.now() > deadline

    def _reserve(
        self,
        resilience: Resilience,
        provider: str,
        args: Any,
        kwargs: Any,
        direct: bool,
        can_fall_back: bool,
    ) -> Reservation | None:
        """Take the call's cost from the provider's budget (None: granted unchecked). Spent,
        with time left, the task runs again later (``Ignore``); past ``quota_wait_limit``,
        ``_FallBack``; run inline, ``Throttled``."""
        quota, context = resilience.quota, self.resilience_context
        if not direct and context.get("fair_turn") is not True:
            self._take_turn(resilience, provider, args, kwargs, context, can_fall_back)
        input_tokens = output_tokens = 0.0
        if quota.counts_tokens(provider):
            input_tokens, output_tokens = self._estimate(resilience, provider, args, kwargs)
        header = context.get("booked")
        # From the message: only numbers, for the units the budget counts (_adjust).
        booked = (
            {str(unit): float(amount) for unit, amount in header.items() if isinstance(amount, int | float)}
            if isinstance(header, dict)
            else None
        )
        if context.get("paced") is True:
            quota.held_back(provider)
        reservation, wait = quota.reserve(provider, self.name, input_tokens, output_tokens, booked)
        holds = 0
        while 0 < wait <= self.quota_hold and not direct and holds < _MOST_HOLDS:
            # A short wait is spent here: republished, the call would go to the back of the
            # queue, a broker round trip later.
            time.sleep(wait)
            holds += 1
            reservation, wait = quota.reserve(provider, self.name, input_tokens, output_tokens, booked)
        if wait <= 0:
            return reservation
        reason = f"the {provider!r} budget is spent"
        if direct:
            raise Throttled(wait, self.name, reason=reason)
        left = self._wait_left(context, resilience.clock.now()) if can_fall_back else None
        if left is not None and wait > left:
            raise _FallBack(reason, Category.RATE_LIMIT.value)
        self._wait_for_quota(wait, context)
        return None  # not reached: _wait_for_quota raises

    def _take_turn(
        self,
        resilience: Resilience,
        provider: str,
        args: Any,
        kwargs: Any,
        context: dict[str, Any],
        can_fall_back: bool,
    ) -> None:
        """A budget shared in fair shares (``providers/fair_share.py``), saturated: book the
        tenant's turn once per request; wait for it, or go to the chain when it is further
        off than the request may wait."""
        if self.request.is_eager:
            return  # run again in place, it could not keep the turn it booked
        tier = resilience.settings.admission.tiers.get(str(context.get("tier")))
        tenant = context.get("tenant", context.get("user_id"))
        turn = resilience.fair_shares.turn(
            provider,
            None if tenant is None else str(tenant),
            1.0 if tier is None else tier.weight,
            lambda: self.fair_cost(args, kwargs),
            self._wait_left(context, resilience.clock.now()) if can_fall_back else None,
        )
        if turn is None:
            return
        if not turn.booked:
            reason = f"its tenant is over its share of the {provider!r} budget for {turn.wait:.1f}s"
            raise _FallBack(reason, Category.RATE_LIMIT.value)
        context["fair_turn"] = True
        if turn.wait > 0:
            self._wait_for_quota(turn.wait, context)

    def _wait_left(self, context: dict[str, Any], now: float) -> float | None:
        """What is left of ``quota_wait_limit`` since the request was admitted (None: no limit)."""
        if self.quota_wait_limit is None:
            return None
        admitted = context.get("at")
        waited = now - float(admitted) if isinstance(admitted, int | float) else 0.0
        return self.quota_wait_limit - waited

    def _wait_for_quota(self, wait: float, context: dict[str, Any]) -> None:
        """Run again once the budget has refilled: the same request under the same task id,
        with its retry count unchanged (a spent budget is neither a failure nor a retry),
        and its context (admission time, deadline) kept, marked as held back by the budget
        (a learned budget grows on its success)."""
        if self.request.is_eager:
            raise self.retry(countdown=wait, max_retries=self.request.retries + 1)
        headers = {HEADER: {**context, "paced": True}}
        self.signature_from_request(countdown=wait, headers=headers).apply_async()
        raise Ignore()
