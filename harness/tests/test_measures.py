"""The report's definitions on hand-made runs: downtime, recovery, percentiles, accounting."""

from __future__ import annotations

from collections import Counter

import pytest
from celery_resilience_harness.simulation.load import LoadRun, Request, outcome_of
from celery_resilience_harness.simulation.measures import (
    fair_shares,
    jain,
    percentile,
    summarise,
    tenant_shares,
)
from celery_resilience_harness.simulation.runner import RunData
from celery_resilience_harness.simulation.scenarios import Scale, scenario
from celery_resilience_harness.simulation.traffic import (
    Arrival,
    arrivals,
    model_answer,
    right_answer,
    tenant_of,
)

from celery_resilience.fallbacks.result import FallbackResult


def request(at: float, outcome: str, latency: float = 0.1) -> Request:
    made = Request(Arrival(at, "free-0001", "classify", "text", 0), at + 10)
    made.outcome, made.ended_at = outcome, at + latency
    return made


def run(requests: list[Request], marks: dict[str, float], states: dict[str, str | None]) -> RunData:
    load = LoadRun(requests, states, Counter(), duration=6.0)
    services = {"providers": {"primary": {"requests": 9, "statuses": {"200": 6, "429": 3}}}, "sentry": {}}
    return RunData(scenario("outage"), "after", load, 1, services, [], marks, {})


def test_downtime_counts_seconds_where_fewer_than_half_got_an_answer_and_recovery_waits_for_the_primary() -> (
    None
):
    """Downtime counts seconds with fewer than half answered; recovery waits for the primary."""
    requests = [
        request(0.1, "primary"),
        request(1.2, "timeout"),
        request(1.5, "error"),
        request(1.7, "primary"),  # second 1: 1 of 3 answered -> down
        request(2.1, "fallback:rule_based"),  # second 2: answered, by a fallback
        request(3.3, "primary"),
        request(3.6, "fallback:cached_similar"),  # second 3: half by the primary
        request(4.2, "primary", latency=0.5),  # second 4: the primary again
    ]
    summary = summarise(run(requests, {"recovery": 2.0}, {"a": "SUCCESS", "b": "FAILURE", "c": None}))
    assert summary.downtime == 1.0
    assert summary.recovery == 2.0  # from t=2.0 to the window at t=4, answered 90%+ by the primary
    assert summary.answered == 6 and summary.failed == 2
    assert summary.outcomes["fallback:rule_based"] == 1
    assert summary.provider_429s == 3
    # Published 3, final 2, one still in the broker: none lost.
    assert (summary.tasks_published, summary.tasks_final, summary.tasks_in_broker, summary.tasks_lost) == (
        3,
        2,
        1,
        0,
    )
    assert summary.latency_p99 == 0.5


def test_percentile_is_the_nearest_rank() -> None:
    """Percentiles are nearest-rank."""
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0


def test_outcomes_name_the_answer_s_source() -> None:
    """Each request's outcome names the source of its answer."""
    fallback = FallbackResult({"label": "bug"}, "rule_based", 0.4, "pipeline.rules", "circuit open", [])
    assert outcome_of("SUCCESS", fallback) == ("fallback:rule_based", "pipeline.rules")
    assert outcome_of("SUCCESS", {"label": "bug", "provider": "primary"}) == ("primary", "")
    assert outcome_of("REVOKED", None)[0] == "error"
    assert outcome_of("FAILURE", ValueError("boom")) == ("error", "ValueError: boom")


def test_the_stand_in_model_answers_by_meaning_and_deadline() -> None:
    """Any filling of a template gets its template's answer; deadlines of two days or fewer are urgent."""
    assert right_answer("classify", "How do I export invoices to a spreadsheet?") == "question"
    assert right_answer("classify", "How do I export the calendar to a spreadsheet?") == "question"
    assert right_answer("prioritise", "Security review of reports before launch in 2 days") == "p1"
    assert right_answer("prioritise", "Security review of reports before launch in 14 days") == "p2"
    assert right_answer("classify", "something nobody sends") is None
    assert (
        model_answer(
            "Route this message. Answer with one of: bug, feature", "Feature request: dark mode for projects"
        )
        == "feature"
    )


def test_tenants_split_users_by_weight_and_one_of_five_sending_ten_times_sends_most() -> None:
    """Weights 10, 1, 1, 1, 1 over 40 users: 29 in the first tenant, 2 or 3 in each other, all free."""
    tenants = Counter(tenant_of(index, 40, (10.0, 1.0, 1.0, 1.0, 1.0)) for index in range(40))
    assert tenants["tenant-0"] == 29 and sum(tenants.values()) == 40 and len(tenants) == 5
    assert tenant_of(3, 40, ()) == ""
    sent = Counter(a.tenant for a in arrivals(scenario("noisy-tenant"), Scale(scale=0.1, speedup=6.0)))
    assert sent["tenant-0"] > 5 * max(count for tenant, count in sent.items() if tenant != "tenant-0")
    assert all(a.tenant == "" for a in arrivals(scenario("outage"), Scale(scale=0.1, speedup=6.0)))
    tiers = {a.user.split("-")[0] for a in arrivals(scenario("noisy-tenant"), Scale(scale=0.1, speedup=6.0))}
    assert tiers == {"free"}  # tiers do not decide between tenants


def test_fair_shares_are_max_min_and_jain_is_one_only_when_every_tenant_gets_its_share() -> None:
    """A capacity of 50 over demands 10, 10, 100: 10, 10 and 30; served as such, Jain's index is 1."""
    assert fair_shares([10.0, 10.0, 100.0], 50.0) == [10.0, 10.0, 30.0]
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([3.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    fair = {"tenant-0": {"requests": 100, "provider": 30}, "tenant-1": {"requests": 10, "provider": 10},
            "tenant-2": {"requests": 10, "provider": 10}}  # fmt: skip
    assert tenant_shares(fair) == {"jain": pytest.approx(1.0), "quiet_served_share": 1.0}
    unfair = {"tenant-0": {"requests": 100, "provider": 46}, "tenant-1": {"requests": 10, "provider": 2},
              "tenant-2": {"requests": 10, "provider": 2}}  # fmt: skip
    found = tenant_shares(unfair)
    assert found["jain"] < 0.75 and found["quiet_served_share"] == 0.2
