"""Alerts from several real workers reach a local Sentry endpoint once; the monitor's lease moves on."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celery_resilience import Throttled
from celery_resilience.monitoring.alerting import LEASE
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore
from tests.conftest import store_url
from tests.http_server import ScriptedServer, sentry_events
from tests.integration.conftest import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.integration


def events(sentry: ScriptedServer) -> list[dict[str, Any]]:
    return [event for _, event in sentry_events(sentry)]


@pytest.fixture
def cluster(
    integration_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ScriptedServer, RedisStore, list[Any]]]:
    sentry = ScriptedServer()
    sentry.respond(200, {})
    run = uuid.uuid4().hex[:8]
    env = {
        **integration_env,
        "RESILIENCE_TEST_MONITOR_PREFIX": f"crtest-mon-{run}",
        "RESILIENCE_TEST_MONITOR_QUEUE": f"crtest-mon-{run}",
        "RESILIENCE_TEST_SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry.port}/42",
    }
    for name, value in env.items():
        if name.startswith("RESILIENCE_TEST_"):
            monkeypatch.setenv(name, value)
    store = RedisStore(store_url(), KeySpace(env["RESILIENCE_TEST_MONITOR_PREFIX"], 16))
    workers = [
        start_worker(
            {**env},
            "tests.integration.monitorapp",
            env["RESILIENCE_TEST_MONITOR_QUEUE"],
            pool="solo",
            extra=["-n", f"monitor{i}-{run}@%h"],
        )
        for i in range(3)
    ]
    try:
        yield sentry, store, workers
    finally:
        for worker in workers:
            stop_worker(worker)
        store.purge()
        sentry.close()


def test_one_alert_per_rule_reaches_sentry_and_the_lease_moves_on(cluster: Any) -> None:
    """Three monitors send one Sentry event per rule, and killing the lease holder moves the lease."""
    sentry, store, workers = cluster
    wait_for(lambda: store.lease_holder(LEASE) is not None, timeout=60)
    from tests.integration import monitorapp  # publishes under this test's prefix

    for _ in range(9):  # one admitted, eight refused: past the threshold of 3
        with contextlib.suppress(Throttled):
            monitorapp.work.apply_async(user_id="heavy")
    wait_for(lambda: len(events(sentry)) >= 1, timeout=30)
    time.sleep(2.0)  # a window in which all three monitors ticked several times: still one event
    sent = events(sentry)
    assert len(sent) == 1
    event = sent[0]
    assert event["level"] == "warning"
    assert event["fingerprint"] == ["celery-resilience", "throttled_per_minute", "cluster"]
    assert event["tags"]["resilience.rule"] == "throttled_per_minute"
    assert event["contexts"]["resilience"]["throttled"] == 8
    assert "High rate limiting activity" in event["message"]

    holder = store.lease_holder(LEASE)
    assert holder is not None
    pid = int(holder.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: store.lease_holder(LEASE) not in (None, holder), timeout=30)
    assert any(w.poll() is None for w in workers)
