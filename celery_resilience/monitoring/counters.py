"""Every per-minute metric counter: its name, and the function that writes it.

The code that does a thing counts it, in the store's per-minute hashes, by calling one of
the ``count_*`` functions here with its ``Count`` (a callable taking the fields). Names
are never spelled anywhere else: ``summary`` reads these constants, and a test checks
that every name read is written by a function here or by ``store/lua/admit.lua``.

Admission counts each decision once, as ``<outcome>@<tier>`` (``admitted@free``), in the
same round trip as the decision (the Lua script, or ``admission_fields`` for the memory
store). Totals per outcome, per tier and overall are derived when the counters are read
(``derive``), which is rare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

__all__ = [
    "Count",
    "REQUESTS",
    "ADMITTED",
    "GRACED",
    "THROTTLED",
    "THROTTLED_BY",
    "REJECTED",
    "DEQUEUED",
    "SOJOURN_TOTAL",
    "SHED",
    "RELEASED_EARLY",
    "count_dequeued",
    "count_released_early",
    "ANSWERED",
    "DELAY_TOTAL",
    "TIER",
    "EXPIRED",
    "UNGATED",
    "STORE_UNAVAILABLE",
    "PUBLISH_FAILED",
    "BREAKER_TRIP",
    "BREAKER_CLOSE",
    "BREAKER_FORCED",
    "BREAKER_OPEN_SECONDS",
    "FALLBACK",
    "FALLBACK_EXHAUSTED",
    "PROVIDER_429",
    "PROVIDER_UNSETTLED",
    "PROVIDER_UNSETTLED_STREAM",
    "RETRY_REFUSED",
    "HANDLED",
    "CACHE_CHECKED",
    "CACHE_DISAGREED",
    "PROVIDER_SCOPE",
    "admission_fields",
    "derive",
    "outcome_field",
    "count_expired",
    "count_ungated",
    "count_publish_failed",
    "count_breaker",
    "count_open_seconds",
    "count_fallback",
    "count_fallback_exhausted",
    "count_provider_429",
    "count_unsettled",
    "count_retry_refused",
    "count_handled",
    "count_cache_check",
    "provider_call_fields",
]

Count = Callable[[Mapping[str, float]], None]
"""Adds fields to the current minute's counters (``Store.count``, or a wrapper of it)."""

# Admission, counted by the admission script (store/lua/admit.lua) or admission_fields.
ADMITTED = "admitted"
GRACED = "graced"
THROTTLED = "throttled"
THROTTLED_BY = "throttled:"  # + strategy: delay, queue_with_timeout, reject_with_backoff, answer
REJECTED = "reject_with_backoff"
# Refused under the ``answer`` strategy: handed to the chain's cheap steps at enqueue
# (what they answered is counted under FALLBACK, what they could not as refused).
ANSWERED = "answer"
DELAY_TOTAL = "delay_total"
# Derived on reading: the totals per outcome above, per tier and overall.
TIER = "tier:"
REQUESTS = "requests"
_OUTCOMES = (ADMITTED, GRACED, THROTTLED)

EXPIRED = "expired"
UNGATED = "ungated"
# Decisions admission made without the store, kept by the process and counted once the
# store answers again (admission writes it with the rest of what it could not report).
STORE_UNAVAILABLE = "store_unavailable"
PUBLISH_FAILED = "publish_failed"
BREAKER_TRIP = "breaker_trip:"
BREAKER_CLOSE = "breaker_close:"
BREAKER_FORCED = "breaker_forced:"
BREAKER_OPEN_SECONDS = "breaker_open_seconds:"
FALLBACK = "fallback:"
FALLBACK_EXHAUSTED = "fallback_exhausted"
PROVIDER_429 = "provider_429:"
# + provider: calls of a token budget that no response settled (no hooks), and streamed
# calls whose events carried no usage
PROVIDER_UNSETTLED = "provider_unsettled:"
PROVIDER_UNSETTLED_STREAM = "provider_unsettled_stream:"
RETRY_REFUSED = "retry_refused:"
# + "<dependency>/<category>": failures the plugin handled (retried, fell back), counted
# instead of reported as errors
HANDLED = "handled:"
# + queue: tasks an AITask dequeued, the seconds they had waited in all, and those shed
# for waiting past their deadline in an overloaded queue (load/sojourn.py)
DEQUEUED = "dequeued:"
SOJOURN_TOTAL = "sojourn_total:"
SHED = "shed:"
# + queue: tasks a fair queue held back that a worker ran before their hold ended, for it
# had a free slot and nothing ready (load/release.py)
RELEASED_EARLY = "released_early:"
CACHE_CHECKED = "cache_checked:"
CACHE_DISAGREED = "cache_disagreed:"
# Provider calls are admissions into the provider's budget, counted apart from users'.
PROVIDER_SCOPE = "provider"


def outcome_field(outcome: str, tier: str) -> str:
    return f"{outcome}@{tier}"


def admission_fields(
    decision: str, reserved: bool, tier: str, strategy: str, pending: int, delay: float
) -> dict[str, float]:
    """What one admission counts (``decision`` is ``allow``, ``allow_with_grace`` or
    ``throttle``; ``pending`` admissions from a lease ride along): admit.lua's counters."""
    fields: dict[str, float] = {}
    if pending:
        fields[outcome_field(ADMITTED, tier)] = pending
    if decision == "allow":
        key = outcome_field(ADMITTED, tier)
        fields[key] = fields.get(key, 0) + 1
    elif decision == "allow_with_grace":
        fields[outcome_field(GRACED, tier)] = 1
    else:
        fields[outcome_field(THROTTLED, tier)] = 1
        fields[THROTTLED_BY + (strategy if reserved or strategy == ANSWERED else REJECTED)] = 1
        if reserved:
            fields[DELAY_TOTAL] = delay
    return fields


def derive(stored: Mapping[str, float]) -> dict[str, float]:
    """Stored counters plus the totals per outcome (``admitted``), per tier (``tier:free``)
    and overall (``requests``)."""
    derived = dict(stored)
    for name, value in stored.items():
        outcome, at, tier = name.partition("@")
        if at and outcome in _OUTCOMES:
            derived[outcome] = derived.get(outcome, 0.0) + value
            derived[TIER + tier] = derived.get(TIER + tier, 0.0) + value
            derived[REQUESTS] = derived.get(REQUESTS, 0.0) + value
    return derived


def count_dequeued(count: Count, queue: str, sojourn: float, shed: bool) -> None:
    """A task left ``queue`` after waiting ``sojourn`` seconds (and was shed, or not)."""
    fields = {DEQUEUED + queue: 1.0, SOJOURN_TOTAL + queue: round(sojourn, 3)}
    if shed:
        fields[SHED + queue] = 1.0
    count(fields)


def count_released_early(count: Count, queues: Mapping[str, int]) -> None:
    """Held tasks of each fair queue a worker ran before their hold ended."""
    count({RELEASED_EARLY + queue: float(n) for queue, n in queues.items()})


def count_expired(count: Count) -> None:
    """A request queued with an expiry reached a worker past it."""
    count({EXPIRED: 1})


def count_ungated(count: Count) -> None:
    """A resilient task was published without the gate (``send_task`` by name)."""
    count({UNGATED: 1})


def count_publish_failed(count: Count) -> None:
    """An admitted publish the broker then refused (its token was given back)."""
    count({PUBLISH_FAILED: 1})


def count_breaker(count: Count, event: str, breaker: str) -> None:
    """A breaker transition (``BREAKER_TRIP``, ``BREAKER_CLOSE``, ``BREAKER_FORCED``)."""
    count({event + breaker: 1})


def count_open_seconds(count: Count, seconds: Mapping[str, float]) -> None:
    """Time each open breaker spent open (the alert monitor adds its tick)."""
    if seconds:
        count({BREAKER_OPEN_SECONDS + name: value for name, value in seconds.items()})


def count_fallback(count: Count, kind: str) -> None:
    """A fallback step of ``kind`` answered."""
    count({FALLBACK + kind: 1})


def count_fallback_exhausted(count: Count) -> None:
    """No fallback step answered."""
    count({FALLBACK_EXHAUSTED: 1})


def provider_call_fields(provider: str, taken: bool) -> dict[str, float]:
    """What one reservation against a provider's budget counts, in ``PROVIDER_SCOPE``
    (``store/lua/budget.lua`` writes the same)."""
    return {outcome_field(ADMITTED if taken else THROTTLED, provider): 1}


def count_handled(count: Count, subject: str, category: str) -> None:
    """A failure the plugin handled (a retry, a fallback, a step the chain moved past)."""
    count({f"{HANDLED}{subject}/{category}": 1})


def count_retry_refused(count: Count, provider: str) -> None:
    """A retry the provider's retry budget did not allow (the request fell back or failed)."""
    count({RETRY_REFUSED + provider: 1})


def count_cache_check(count: Count, task: str, agreed: bool) -> None:
    """A provider's answer compared with what the semantic cache would have served."""
    count({CACHE_CHECKED + task: 1, **({} if agreed else {CACHE_DISAGREED + task: 1})})


def count_provider_429(count: Count, provider: str) -> None:
    """A provider answered 429 despite its budget."""
    count({PROVIDER_429 + provider: 1})


def count_unsettled(count: Count, provider: str, calls: int, streamed: bool) -> None:
    """Calls of a token budget that ended without the provider's count settling them."""
    count({(PROVIDER_UNSETTLED_STREAM if streamed else PROVIDER_UNSETTLED) + provider: calls})
