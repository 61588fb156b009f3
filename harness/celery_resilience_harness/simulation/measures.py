"""What a run measured, computed from its requests, tasks and the services' counters."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .load import Request
from .runner import RunData
from .traffic import right_answer

__all__ = [
    "RunSummary",
    "summarise",
    "percentile",
    "timeline",
    "error_kind",
    "fair_shares",
    "jain",
    "tenant_shares",
]

ANSWER_KINDS = (
    "primary",
    "fallback:alternative_provider",
    "fallback:cached_similar",
    "fallback:rule_based",
    "fallback:template",
)
OUTCOMES = (*ANSWER_KINDS, "rejected", "error", "timeout")


@dataclass
class RunSummary:
    scenario: str
    mode: str
    seconds: float
    requests: int
    outcomes: dict[str, int]
    answered: int
    answered_share: float
    failed: int  # errors and timeouts: what the user saw go wrong
    errors_by_kind: dict[str, int]  # the requests that ended in an error, by what raised
    throttled_submits: int
    tasks_published: int
    tasks_final: int
    tasks_in_broker: int
    tasks_lost: int
    latency_p50: float | None
    latency_p99: float | None
    downtime: float  # seconds in which fewer than half the requests sent got any answer
    recovery: float | None  # seconds from the provider's return (or the pool's) to normal answers
    provider_calls: dict[str, int]
    provider_statuses: dict[str, dict[str, int]]
    provider_429s: int
    db_refused: int
    db_peak: int
    alerts: int
    alert_issues: int
    alerts_by_level: dict[str, int]
    alerts_by_kind: dict[str, int]
    alert_titles: list[tuple[str, int]]
    plugin: dict[str, float]
    marks: dict[str, float]
    # Per answer kind: [answers matching what the provider answers to that text, answers scored]
    right_answers: dict[str, list[int]]
    # Where the scenario groups users into tenants: per tenant, its requests, its provider
    # answers and its answers of any kind; Jain's index of provider answers over fair
    # shares, and the share of their demand the quiet tenants' provider answers were.
    tenants: dict[str, dict[str, int]]
    tenant_fairness: dict[str, float]
    timeline: list[dict[str, Any]] = field(repr=False)
    samples: list[dict[str, Any]] = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, math.ceil(share * len(ordered)) - 1)
    return ordered[rank]


def timeline(requests: Sequence[Request], seconds: float, width: float = 1.0) -> list[dict[str, Any]]:
    """Per ``width`` seconds of arrival: how the requests sent then ended."""
    buckets = [Counter[str]() for _ in range(max(1, math.ceil(seconds / width)))]
    for request in requests:
        index = min(len(buckets) - 1, int(request.arrival.at / width))
        buckets[index]["sent"] += 1
        buckets[index][request.outcome or "timeout"] += 1
        buckets[index]["throttled"] += request.throttles
    return [{"t": round(i * width, 3), **dict(bucket)} for i, bucket in enumerate(buckets)]


def _answered(bucket: dict[str, Any], kinds: Sequence[str] = ANSWER_KINDS) -> int:
    return sum(int(bucket.get(kind, 0)) for kind in kinds)


def _downtime(buckets: Sequence[dict[str, Any]], width: float) -> float:
    return sum(width for b in buckets if b.get("sent") and _answered(b) < 0.5 * b["sent"])


def _recovery(
    buckets: Sequence[dict[str, Any]], width: float, since: float | None, primary: bool
) -> float | None:
    """Seconds from ``since`` to the first window of arrivals that is answered as normal
    (by the primary after a provider outage, at all after a database spike) for 90%+."""
    if since is None:
        return None
    kinds = ("primary",) if primary else ANSWER_KINDS
    for bucket in buckets:
        if bucket["t"] + width <= since or not bucket.get("sent"):
            continue
        if _answered(bucket, kinds) >= 0.9 * bucket["sent"]:
            return max(0.0, float(bucket["t"]) - since)
    return None


def _right_answers(requests: Sequence[Request]) -> dict[str, list[int]]:
    """How often each kind of answer was the provider's own answer to that text."""
    scored: dict[str, list[int]] = {}
    for request in requests:
        expected = right_answer(request.arrival.kind, request.arrival.text)
        if not request.answered or request.answer is None or expected is None:
            continue
        tally = scored.setdefault(str(request.outcome), [0, 0])
        tally[0] += request.answer == expected
        tally[1] += 1
    return scored


def error_kind(detail: str) -> str:
    """What ended a request in an error, named once per kind: the exception's type (a
    publish that failed says so), or why the task never ran."""
    publish = detail.startswith("publish failed: ")
    if publish:
        detail = detail.removeprefix("publish failed: ")
    kind = detail.split(":", 1)[0] if ":" in detail else detail or "unknown"
    return f"{kind} (at publish)" if publish else kind


def summarise(data: RunData, window: float = 1.0) -> RunSummary:
    load = data.load
    requests = load.requests
    outcomes = Counter(r.outcome or "timeout" for r in requests)
    errors = Counter(error_kind(r.detail) for r in requests if r.outcome == "error")
    answered = sum(outcomes[k] for k in ANSWER_KINDS)
    latencies = [r.latency for r in requests if r.latency is not None]
    buckets = timeline(requests, load.duration, window)
    providers = data.services.get("providers", {})
    statuses = {name: dict(p.get("statuses", {})) for name, p in providers.items()}
    final = load.tasks_final()
    mark = data.marks.get("recovery", data.marks.get("calm"))
    sentry = data.services.get("sentry", {})
    db = data.services.get("db", {})
    return RunSummary(
        scenario=data.scenario.name,
        mode=data.mode,
        seconds=round(load.duration, 2),
        requests=len(requests),
        outcomes={k: outcomes[k] for k in OUTCOMES if outcomes[k]},
        answered=answered,
        answered_share=answered / len(requests) if requests else 0.0,
        failed=outcomes["error"] + outcomes["timeout"],
        errors_by_kind=dict(errors.most_common()),
        throttled_submits=sum(r.throttles for r in requests),
        tasks_published=load.tasks_published,
        tasks_final=final,
        tasks_in_broker=data.remaining_in_broker,
        tasks_lost=max(0, load.tasks_published - final - data.remaining_in_broker),
        latency_p50=percentile(latencies, 0.5),
        latency_p99=percentile(latencies, 0.99),
        downtime=_downtime(buckets, window),
        recovery=_recovery(buckets, window, mark, primary="recovery" in data.marks),
        provider_calls={name: int(p.get("requests", 0)) for name, p in providers.items()},
        provider_statuses=statuses,
        provider_429s=sum(int(s.get("429", 0)) for s in statuses.values()),
        db_refused=int(db.get("counts", {}).get("refused", 0)),
        db_peak=int(db.get("peak", 0)),
        alerts=int(sentry.get("events", 0)),
        alert_issues=int(sentry.get("issues", 0)),
        alerts_by_level=dict(sentry.get("by_level", {})),
        alerts_by_kind=dict(sentry.get("by_kind", {})),
        alert_titles=[(str(title), int(n)) for title, n in sentry.get("top_issues", [])],
        plugin=data.plugin,
        marks=data.marks,
        right_answers=_right_answers(requests),
        tenants=(tenants := _tenants(requests)),
        tenant_fairness=tenant_shares(tenants),
        timeline=buckets,
        samples=data.samples,
    )


def _tenants(requests: Sequence[Request]) -> dict[str, dict[str, int]]:
    found: dict[str, Counter[str]] = {}
    for request in requests:
        tenant = request.arrival.tenant
        if not tenant:
            continue
        counts = found.setdefault(tenant, Counter())
        counts["requests"] += 1
        counts["provider"] += request.outcome == "primary"
        counts["answered"] += request.outcome in ANSWER_KINDS
    return {tenant: dict(counts) for tenant, counts in sorted(found.items())}


def fair_shares(demands: Sequence[float], capacity: float) -> list[float]:
    """Max-min fair shares of ``capacity``: each tenant its demand or an equal part of what is left."""
    shares = [0.0] * len(demands)
    left, open_ = capacity, sorted(range(len(demands)), key=lambda i: demands[i])
    while open_:
        part = left / len(open_)
        index = open_[0]
        if demands[index] <= part:
            shares[index] = demands[index]
            left -= demands[index]
            open_.pop(0)
            continue
        for rest in open_:
            shares[rest] = part
        break
    return shares


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when every value is equal, 1/n when one has everything."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


def tenant_shares(tenants: dict[str, dict[str, int]]) -> dict[str, float]:
    """Jain's index of the tenants' provider answers over their max-min fair shares of all
    provider answers, and the quiet tenants' (all but the one sending most) provider
    answers as a share of their demand. Empty without tenants."""
    if len(tenants) < 2:
        return {}
    names = list(tenants)
    demands = [float(tenants[name].get("requests", 0)) for name in names]
    served = [float(tenants[name].get("provider", 0)) for name in names]
    shares = fair_shares(demands, sum(served))
    noisy = max(range(len(names)), key=lambda i: demands[i])
    quiet = [i for i in range(len(names)) if i != noisy]
    quiet_demand = sum(demands[i] for i in quiet)
    return {
        "jain": jain([s / f for s, f in zip(served, shares, strict=True) if f > 0]),
        "quiet_served_share": sum(served[i] for i in quiet) / quiet_demand if quiet_demand else 0.0,
    }
