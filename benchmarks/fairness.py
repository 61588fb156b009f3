"""Weighted fairness per tenant in a saturated queue, with a real worker, against FIFO.

    python benchmarks/fairness.py

One worker (four threads) runs a task that takes ``SERVICE`` seconds: a capacity of
``4 / SERVICE`` tasks a second. Five tenants of equal weight offer work for ``WINDOW``
seconds, arrivals paced by the clock: one offers ten times as much as each of the
others, and the whole is twice the capacity. Four runs, side by side:

- ``fifo``: the queue first come, first served (fairness off);
- ``fair``: the queue in ``resilience_fair_queues`` (saturated from 20 ready messages,
  its service rate learned from the worker's reports, nothing stated);
- ``priority``: as ``fair``, the order kept by message priority (``"order": "priority"``)
  instead of held-back publishes;
- ``split``: as ``fair``, the noisy tenant spreading its work over 20 user ids.

Per run, over the window (tasks published in it and finished by its end): each tenant's
served tasks against its max-min fair share of what the worker served, Jain's index over
served / fair share (1 is fair), the share of their demand the quiet tenants were
served, and the time to drain every task. Every published task is counted finished.

Then the same tenants and offers against a provider budget instead (``BUDGET_RUNS``):
an ``AITask`` whose budget (``fairnessapp.BUDGET``) serves half the demand, the worker
with threads to spare, so work waits on the budget and never stands in the queue. What
waits past ``quota_wait_limit`` is answered by a template. ``budget-fifo`` leaves the
budget first come, first served; ``budget-fair`` shares it in fair shares
(``resilience_fair_providers``); ``budget-split`` as ``budget-fair``, the noisy tenant
over 20 user ids. Served is answered by the provider; every call is counted answered,
by the provider or the template, and the provider's answers in all are compared with
FIFO's (the budget used as fully).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis
from celery_resilience_harness.simulation.measures import fair_shares, tenant_shares
from stamp import ROOT, commit, day, machine
from workers import thread_worker

RESULTS = ROOT / "benchmarks" / "results" / "fairness.json"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
SERVICE = 0.1
THREADS = 4
CAPACITY = THREADS / SERVICE
WINDOW = float(os.environ.get("BENCH_FAIR_SECONDS", "20"))
TENANTS = ("noisy", "quiet-1", "quiet-2", "quiet-3", "quiet-4")
OFFERS = {"noisy": 10, "quiet-1": 1, "quiet-2": 1, "quiet-3": 1, "quiet-4": 1}  # relative demand
DEMAND = 2 * CAPACITY  # tasks a second, all tenants together
BUDGET_RUNS = ("budget-fifo", "budget-fair", "budget-split")
BUDGET_THREADS = 16


def worker(variant: str) -> subprocess.Popen[bytes]:
    env = {"BENCH_FAIR_VARIANT": variant}
    threads = BUDGET_THREADS if variant in BUDGET_RUNS else THREADS
    return thread_worker("fairnessapp", f"bench-fair-{variant}", f"fair-{variant}", threads, env)


def arrivals(demand: float) -> list[tuple[float, str]]:
    """(time from the start, tenant) of every publish: each tenant evenly paced at its rate."""
    total = sum(OFFERS.values())
    times: list[tuple[float, str]] = []
    for tenant, share in OFFERS.items():
        rate = demand * share / total
        times += [(i / rate, tenant) for i in range(int(rate * WINDOW))]
    return sorted(times)


def fairness_of(demand: dict[str, int], served: dict[str, int]) -> dict[str, Any]:
    """Each tenant's max-min fair share of what was served, Jain's index over served / fair
    share, and the quiet tenants' served share of their demand: the replay's own measures
    (``celery_resilience_harness.simulation.measures``)."""
    shares = fair_shares([float(demand[t]) for t in TENANTS], float(sum(served.values())))
    measured = tenant_shares({t: {"requests": demand[t], "provider": served[t]} for t in TENANTS})
    return {
        "fair_share": {t: round(share, 1) for t, share in zip(TENANTS, shares, strict=True)},
        "jain": round(measured["jain"], 3),
        "quiet_served_share": round(measured["quiet_served_share"], 3),
    }


def run(variant: str) -> dict[str, Any]:
    """One variant: publish the arrivals, wait for every task, measure."""
    os.environ["BENCH_FAIR_VARIANT"] = variant
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fairnessapp

    from celery_resilience import caller

    done_list = redis.Redis.from_url(f"{REDIS}/12")
    done_list.delete(fairnessapp.DONE)
    fairnessapp.resilience.store.purge()
    proc = worker(variant)
    fairnessapp.work.apply_async(("warm-up",), user_id="warm-up")  # the worker is up once it is done
    deadline = time.time() + 60
    while done_list.llen(fairnessapp.DONE) < 1 and time.time() < deadline:
        time.sleep(0.05)
    done_list.delete(fairnessapp.DONE)
    published: dict[str, tuple[str, float]] = {}
    start = time.time()
    for index, (offset, tenant) in enumerate(arrivals(DEMAND)):
        wait = start + offset - time.time()
        if wait > 0:
            time.sleep(wait)
        user = f"{tenant}-{index % 20}" if variant == "split" and tenant == "noisy" else tenant
        with caller(user_id=user, tenant=tenant):
            published[fairnessapp.work.delay(tenant).id] = (tenant, time.time() - start)
    publish_seconds = time.time() - start
    finish_by = time.time() + 6 * WINDOW
    while done_list.llen(fairnessapp.DONE) < len(published) and time.time() < finish_by:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [json.loads(raw) for raw in done_list.lrange(fairnessapp.DONE, 0, -1)]
    status = fairnessapp.resilience.store.fair_status(fairnessapp.QUEUE)
    with fairnessapp.app.connection_for_write() as connection:
        connection.default_channel.queue_purge(fairnessapp.QUEUE)
    fairnessapp.resilience.store.purge()
    ended = {row["id"]: row["at"] - start for row in finished if row["id"] in published}
    demand = {t: sum(1 for who, at in published.values() if who == t and at <= WINDOW) for t in TENANTS}
    served = {
        t: sum(
            1
            for task, (who, at) in published.items()
            if who == t and at <= WINDOW and ended.get(task, 1e9) <= WINDOW
        )
        for t in TENANTS
    }
    return {
        "published": len(published),
        "finished": len(ended),
        "demand": demand,
        "served_in_window": served,
        **fairness_of(demand, served),
        "drain_seconds": round(max(ended.values(), default=0.0), 2),
        "publish_seconds": round(publish_seconds, 2),
        "held_back": int(status.get("delayed", 0)),
        "learned_capacity": round(status.get("capacity", 0.0), 1),
    }


def run_budget(variant: str) -> dict[str, Any]:
    """One variant against the provider budget: publish the arrivals, read every answer."""
    os.environ["BENCH_FAIR_VARIANT"] = variant
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fairnessapp

    from celery_resilience import FallbackResult, caller
    from celery_resilience.providers.budget import UnitBudget
    from celery_resilience.rates import parse_rate

    window = UnitBudget(parse_rate(fairnessapp.BUDGET)).window()
    rate = window.count / window.span  # the calls a second the budget serves
    fairnessapp.resilience.store.purge()
    proc = worker(variant)
    try:
        fairnessapp.ask.delay("warm-up").get(timeout=60)  # the worker is up once it is answered
        fairnessapp.resilience.store.purge()  # the warm-up's call out of the window
        published: list[tuple[str, Any]] = []
        start = time.time()
        for index, (offset, tenant) in enumerate(arrivals(2 * rate)):
            wait = start + offset - time.time()
            if wait > 0:
                time.sleep(wait)
            user = f"{tenant}-{index % 20}" if variant == "budget-split" and tenant == "noisy" else tenant
            with caller(user_id=user, tenant=tenant):
                published.append((tenant, fairnessapp.ask.delay(tenant)))
        answers = [(tenant, result.get(timeout=60)) for tenant, result in published]
        status = fairnessapp.resilience.store.fair_status("bench", "provider")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        fairnessapp.resilience.store.purge()
    labelled = sum(isinstance(answer, FallbackResult) for _, answer in answers)
    demand = {t: sum(1 for who, _ in answers if who == t) for t in TENANTS}
    served = {t: sum(1 for who, answer in answers if who == t and answer == "provider") for t in TENANTS}
    return {
        "published": len(published),
        "answered": labelled + sum(served.values()),
        "budget_per_second": round(rate, 2),
        "demand": demand,
        "served_by_provider": served,
        **fairness_of(demand, served),
        "provider_answers": sum(served.values()),
        "over_share": int(status.get("over_share", 0)),
        "waited_for_turn": int(status.get("delayed", 0)),
    }


def main() -> None:
    if len(sys.argv) == 2:  # one run, in a process of its own (one app per variant)
        variant = sys.argv[1]
        print(json.dumps(run_budget(variant) if variant in BUDGET_RUNS else run(variant)))
        return
    results: dict[str, Any] = {"stamp": {"commit": commit(), "machine": machine(), "day": day()},
                               "service": SERVICE, "threads": THREADS, "capacity": CAPACITY, "demand": DEMAND,
                               "window_seconds": WINDOW, "offers": OFFERS, "runs": {}}  # fmt: skip
    only = os.environ.get("BENCH_FAIR_RUNS")
    variants = ("fifo", "fair", "priority", "split", *BUDGET_RUNS)
    for variant in [v for v in variants if not only or v in only.split(",")]:
        done = subprocess.run(
            [sys.executable, __file__, variant], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        results["runs"][variant] = row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{variant:<6} {json.dumps(row)}", flush=True)
    if only:  # a partial run is for a look, not for the docs
        return
    fifo, fair, split, prio = (results["runs"][v] for v in ("fifo", "fair", "split", "priority"))

    def drain(row: dict[str, Any]) -> str:
        return f"{row['drain_seconds']:.1f}s ({row['drain_seconds'] / fifo['drain_seconds'] - 1:+.1%})"

    print(
        f"\nJain's index over served / fair share in the {WINDOW:g}s window: FIFO {fifo['jain']:.2f}, "
        f"fair {fair['jain']:.2f}, by priority {prio['jain']:.2f}; quiet tenants served "
        f"{fifo['quiet_served_share']:.0%} of their demand under FIFO, "
        f"{fair['quiet_served_share']:.0%} fair, {prio['quiet_served_share']:.0%} by priority; "
        f"drain {drain(fair)} fair, {drain(prio)} by priority, {fifo['drain_seconds']:.1f}s FIFO; "
        f"noisy over 20 user ids served {split['served_in_window']['noisy']} vs "
        f"{fair['served_in_window']['noisy']} as one"
    )
    b_fifo, b_fair, b_split = (results["runs"][v] for v in BUDGET_RUNS)
    print(
        f"A provider budget: Jain's index FIFO {b_fifo['jain']:.2f}, fair {b_fair['jain']:.2f}; quiet "
        f"tenants answered by the provider {b_fifo['quiet_served_share']:.0%} FIFO, "
        f"{b_fair['quiet_served_share']:.0%} fair; provider answers {b_fair['provider_answers']} fair vs "
        f"{b_fifo['provider_answers']} FIFO; noisy over 20 user ids "
        f"{b_split['served_by_provider']['noisy']} vs {b_fair['served_by_provider']['noisy']} as one"
    )
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"(written to {RESULTS.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
