"""Fair queues with a real worker on Redis: a quiet tenant is served before a noisy
tenant's flood (held back by delay, or ordered by priority without holding anything back),
either drains as FIFO does, spare capacity delays nobody, and every task is served."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celery_resilience import caller
from tests.integration.conftest import noisy_and_quiet, start_worker, status_report, stop_worker, wait_for


@pytest.fixture(scope="module")
def fair_worker(integration_env: dict[str, str]) -> Iterator[Any]:
    """One worker thread consuming the two fair queues and the FIFO queue."""
    from tests.integration import fairapp

    proc: subprocess.Popen[bytes] = start_worker(
        integration_env, "tests.integration.fairapp", f"{fairapp.FAIR},{fairapp.FIFO},{fairapp.PRIO}"
    )
    done = redis.Redis.from_url(f"{fairapp.REDIS}/12")
    try:
        fairapp.work.apply_async(("warm-up",), user_id="warm-up")  # also reports the service rate
        wait_for(lambda: done.llen(fairapp.DONE) >= 1, timeout=60)
        yield fairapp
    finally:
        stop_worker(proc)
        done.delete(fairapp.DONE)
        fairapp.resilience.store.purge()


def finished(app: Any) -> list[dict[str, Any]]:
    done = redis.Redis.from_url(f"{app.REDIS}/12")
    return [json.loads(raw) for raw in done.lrange(app.DONE, 0, -1)]


def quiet_waits(
    app: Any, queue: str, count: int = 132, quiet_every: int = 11, per_second: float = 44
) -> tuple[list[float], list[dict[str, Any]], float]:
    """``count`` tasks at ``per_second``, one in ``quiet_every`` the quiet tenant's (by
    default for three seconds a noisy tenant offers 40 tasks a second and a quiet one 4;
    the worker serves 20): how long each quiet task took to finish, every finished task,
    and the seconds from the first publish to the last finish."""
    done = redis.Redis.from_url(f"{app.REDIS}/12")
    done.delete(app.DONE)
    published: dict[str, float] = {}
    start = time.time()
    for _, tenant in noisy_and_quiet(count, per_second, quiet_every):
        published[app.work.apply_async((tenant,), queue=queue).id] = time.time()
    wait_for(lambda: done.llen(app.DONE) >= len(published), timeout=60)
    rows = finished(app)
    assert sorted(row["id"] for row in rows) == sorted(published)  # every task published was served
    drain = max(row["at"] for row in rows) - start
    return [row["at"] - published[row["id"]] for row in rows if row["label"] == "quiet"], rows, drain


def test_a_quiet_tenant_is_served_before_a_noisy_flood(fair_worker: Any) -> None:
    """Beside a noisy tenant at twice the capacity, a quiet tenant's tasks wait far less than under FIFO."""
    fifo, _, _ = quiet_waits(fair_worker, fair_worker.FIFO)
    fair, rows, _ = quiet_waits(fair_worker, fair_worker.FAIR)
    assert max(fair) < max(fifo) / 2, (fair, fifo)
    held = [row for row in rows if row["fair_delay"]]
    assert held and all(row["tenant"] == "noisy" and row["eta"] for row in held)
    status = fair_worker.resilience.store.fair_status(fair_worker.FAIR)
    assert status["delayed:noisy"] == len(held)


def test_held_work_starts_early_once_the_others_leave(
    fair_worker: Any, integration_env: dict[str, str]
) -> None:
    """Once the quiet tenant stops, the flood's holds start early and the queue drains as FIFO does."""
    _, _, fifo_drain = quiet_waits(fair_worker, fair_worker.FIFO, count=80, quiet_every=4, per_second=40)
    _, rows, drain = quiet_waits(fair_worker, fair_worker.FAIR, count=80, quiet_every=4, per_second=40)
    held = [row for row in rows if row["fair_delay"]]
    early = [row for row in held if row["early"]]
    assert early, held
    assert drain <= fifo_drain * 1.1 + 0.5, (drain, fifo_drain)
    report = status_report(integration_env, "tests.integration.fairapp")
    minutes = (report["this_minute"], report["last_minute"])
    assert sum(m["released_early"].get(fair_worker.FAIR, 0) for m in minutes) >= len(early)


def test_a_priority_fair_queue_orders_without_holding_back(fair_worker: Any) -> None:
    """By priority, the quiet tenant goes first, nothing waits on an ETA, and it drains as FIFO does."""
    fifo, _, fifo_drain = quiet_waits(fair_worker, fair_worker.FIFO)
    fair, rows, drain = quiet_waits(fair_worker, fair_worker.PRIO)
    assert max(fair) < max(fifo) / 2, (fair, fifo)
    assert all(row["eta"] is None and row["fair_delay"] is None for row in rows)
    assert {row["priority"] for row in rows if row["tenant"] == "quiet"} <= {0, None}
    assert any(row["priority"] for row in rows if row["tenant"] == "noisy")
    assert drain <= fifo_drain * 1.1 + 0.5, (drain, fifo_drain)  # work-conserving


def test_spare_capacity_delays_nobody(fair_worker: Any) -> None:
    """With the queue below its saturation depth, no publish is held back and no ETA is set."""
    done = redis.Redis.from_url(f"{fair_worker.REDIS}/12")
    done.delete(fair_worker.DONE)
    # The work this process held back in the last test is due: the queue is not saturated.
    wait_for(lambda: not fair_worker.resilience.fairness.saturated(fair_worker.FAIR), timeout=30)
    with caller(user_id="spare-user", tenant="spare"):
        for index in range(4):
            fair_worker.work.delay(f"spare-{index}")
            time.sleep(2 * fair_worker.SERVICE)
    wait_for(lambda: done.llen(fair_worker.DONE) >= 4, timeout=30)
    rows = finished(fair_worker)
    assert [(row["fair_delay"], row["eta"]) for row in rows] == [(None, None)] * 4
    assert {row["tenant"] for row in rows} == {"spare"}
