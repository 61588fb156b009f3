"""A store that hangs or is gone never hangs a caller's publish."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis
from celery import Celery

from celery_resilience import AdmissionUnavailable, Resilience, ResilientTask
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.integration


def make_app(store_url: str, mode: str) -> tuple[Celery, ResilientTask, str]:
    queue = f"crtest-down-{uuid.uuid4().hex[:8]}"
    app = Celery("down", broker=f"{REDIS_URL}/11", set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        resilience_store_url=store_url,
        resilience_store_timeout=0.2,
        resilience_admission_on_store_failure=mode,
    )
    Resilience(app)

    @app.task(base=ResilientTask, name="down.work", shared=False)
    def work() -> None:
        return None

    return app, work, queue


def test_hung_store_fails_open_and_the_task_is_published(
    silent_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail open: every call is published (with an 'unchecked' decision), one warning, every call counted."""
    app, work, queue = make_app(f"redis://127.0.0.1:{silent_server}/0", "open")
    broker = redis.Redis.from_url(f"{REDIS_URL}/11")
    try:
        with caplog.at_level(logging.WARNING, "celery_resilience"):
            results = [work.apply_async(user_id="u1") for _ in range(5)]
        assert broker.llen(queue) == 5
        assert len(results) == 5
        assert Resilience.of(app).admission.stats["store_unavailable"] == 5
        # One warning from admission for the whole outage (start-up has said so once too).
        admission = [r for r in caplog.records if r.name == "celery_resilience.admission"]
        assert sum("unreachable" in r.message for r in admission) == 1
        published = broker.lindex(queue, 0)
        assert isinstance(published, bytes) and b'"decision": "unchecked"' in published
    finally:
        broker.delete(queue)


def test_missing_store_fails_closed_when_configured() -> None:
    """Fail closed: the caller gets AdmissionUnavailable and nothing is published."""
    _, work, queue = make_app("redis://127.0.0.1:1/0", "closed")
    broker = redis.Redis.from_url(f"{REDIS_URL}/11")
    with pytest.raises(AdmissionUnavailable, match="unreachable"):
        work.apply_async(user_id="u1")
    assert broker.llen(queue) == 0


def test_a_cluster_that_does_not_answer_fails_open() -> None:
    """No node of the Cluster answers: every call is published unchecked, and counted."""
    app, work, queue = make_app("redis+cluster://127.0.0.1:1,127.0.0.1:2", "open")
    broker = redis.Redis.from_url(f"{REDIS_URL}/11")
    try:
        for _ in range(3):
            work.apply_async(user_id="u1")
        assert broker.llen(queue) == 3
        assert Resilience.of(app).admission.stats["store_unavailable"] == 3
    finally:
        broker.delete(queue)
