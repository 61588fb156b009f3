"""Lease renewals of a real publishing process, on one server and on a Cluster.

Ten hot users publish through a real broker for six lease windows, five of them joining
half a window after the others, so that their leases end on the other phase of the grid.
The store's round trips are counted (not answered): after the first renewal brings the
later leases along, one round trip per window renews them all. Every task published is in
the broker and every admission reaches the metrics.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery

from celery_resilience import Resilience, ResilientTask
from celery_resilience.cli import status_report
from tests.conftest import REDIS_URL, store_url
from tests.topologies import Cluster, wait_until

pytestmark = pytest.mark.integration

WINDOW = 0.2
SECONDS = 1.2
PACE = 0.002  # a publish every 2 ms, round the users: each publishes every 20 ms


def make_app(url: str) -> tuple[Celery, Any, str]:
    queue = f"crtest-renew-{uuid.uuid4().hex[:8]}"
    app = Celery("renewals", broker=f"{REDIS_URL}/11", set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        resilience_store_url=url,
        resilience_key_prefix=f"crtest-{uuid.uuid4().hex[:8]}",
        resilience_tiers={"standard": {"rate": "1000/s", "burst": 100}},
        resilience_default_tier="standard",
        resilience_lease_window=WINDOW,
        resilience_lease_max_tokens=64,
    )
    Resilience(app)

    @app.task(base=ResilientTask, name="renewals.work", shared=False)
    def work() -> None:
        return None

    return app, work, queue


def count_round_trips(store: Any) -> list[int]:
    """Count the store's admission round trips (one cell, bumped per call)."""
    trips = [0]

    def counted(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            trips[0] += 1
            return method(*args)

        return call

    store.admit = counted(store.admit)
    store.admit_many = counted(store.admit_many)
    return trips


@pytest.fixture(params=["one server", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "cluster":
        cluster: Cluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return store_url()


def test_hot_users_on_both_phases_of_the_grid_renew_in_one_round_trip_per_window(url: str) -> None:
    """Six windows, ten hot users on two phases: about one renewal round trip per window, none lost."""
    app, task, queue = make_app(url)
    resilience = Resilience.of(app)
    trips = count_round_trips(resilience.store)
    published: list[str] = []
    try:
        start = time.monotonic()
        index = 0
        while (elapsed := time.monotonic() - start) < SECONDS:
            # Paced on the clock, not by sleeping a fixed time: a slow publish does not stretch the run.
            ahead = index * PACE - elapsed
            if ahead > 0:
                time.sleep(ahead)
            users = 10 if elapsed >= WINDOW / 2 else 5  # the later five join half a window on
            published.append(task.apply_async(user_id=f"user-{index % users}").id)
            index += 1
        windows = (time.monotonic() - start) / WINDOW
        renewals = trips[0] - 10  # each user's first admission aside
        # Renewing each phase on its own would make about two round trips per window.
        assert renewals <= windows + 2, (renewals, windows)
        broker = redis.Redis.from_url(f"{REDIS_URL}/11")
        queued = sorted(json.loads(raw)["headers"]["id"] for raw in broker.lrange(queue, 0, -1))
        assert queued == sorted(published)
        resilience.admission.flush_leases()

        def admitted() -> float:
            report = status_report(app)
            return float(sum(report[m]["admitted"] for m in ("this_minute", "last_minute")))

        wait_until(lambda: admitted() >= len(published), 5, "every admission in the metrics")
        assert admitted() == len(published)
    finally:
        redis.Redis.from_url(f"{REDIS_URL}/11").delete(queue)
        resilience.store.purge()
        resilience.store.close()
