"""Queue depth on the real brokers, and what a filling queue does to callers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_resilience import Resilience, ResilientTask, Throttled
from celery_resilience.load.queue_depth import QueueDepths
from tests.conftest import REDIS_URL, store_url
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
BROKERS = {
    "redis": (f"{REDIS_URL}/11", {}),
    "redis-prefixed": (f"{REDIS_URL}/11", {"global_keyprefix": "crtest-pfx:"}),
    "rabbitmq": (AMQP_URL, {}),
}


def make_app(broker: str, options: dict[str, Any], queue: str, prefix: str, **conf: Any) -> Celery:
    app = Celery("bp", broker=broker, set_as_current=False)
    app.conf.update(
        broker_transport_options=options,
        task_queue_max_priority=10,
        task_default_priority=0,
        resilience_store_url=store_url(),
        resilience_key_prefix=prefix,
        **conf,
    )

    @app.task(name="bp.filler", shared=False)
    def filler() -> None:
        return None

    return app


@pytest.fixture
def queue() -> str:
    return f"crtest-bp-{uuid.uuid4().hex[:8]}"


def purge(app: Celery, queue: str) -> None:
    with app.connection_for_write() as connection:
        channel: Any = connection.channel()
        try:
            channel.queue_purge(queue)
            channel.queue_delete(queue)
        except connection.channel_errors:
            pass


@pytest.mark.parametrize("broker", list(BROKERS))
def test_depth_counts_ready_messages_across_priorities(broker: str, queue: str, prefix: str) -> None:
    """Messages of every priority count; a queue that does not exist is empty."""
    url, options = BROKERS[broker]
    app = make_app(url, options, queue, prefix)
    depths = QueueDepths(app, interval=0)
    try:
        assert depths.depth(f"{queue}-never-declared") == 0
        for priority in (0, 3, 6, 9, 9):
            app.tasks["bp.filler"].apply_async(queue=queue, priority=priority)
        wait_for(lambda: depths.depth(queue) == 5, timeout=10)  # RabbitMQ counts asynchronously
    finally:
        purge(app, queue)
        depths.close()


def test_depth_is_cached_for_the_interval(queue: str, prefix: str) -> None:
    """Publishes between probes cost no probe: one probe per queue per interval."""
    url, options = BROKERS["redis"]
    app = make_app(url, options, queue, prefix)
    depths = QueueDepths(app, interval=60)
    try:
        assert depths.depth(queue) == 0
        app.tasks["bp.filler"].apply_async(queue=queue)
        assert [depths.depth(queue) for _ in range(100)] == [0] * 100
        assert depths.probes == 1
    finally:
        purge(app, queue)


def backpressured_app(broker: str, queue: str, prefix: str, default_queue: str) -> Celery:
    """Depth thresholds on ``queue`` (and the default queue), at a limit whose next token is seconds away."""
    url, options = BROKERS[broker]
    app = make_app(
        url,
        options,
        queue,
        prefix,
        task_default_queue=default_queue,
        # At 60/m the next token is seconds away, so the policy's 30 s back-off governs.
        resilience_tiers={"free": {"rate": "60/m", "burst": 1}},
        resilience_queue_thresholds={name: {"high": 5, "critical": 10} for name in {queue, default_queue}},
        resilience_depth_interval=0.01,
        resilience_prediction={"enabled": False},
    )
    Resilience(app)
    return app


@pytest.fixture(params=["redis", "rabbitmq"])
def backpressured(
    request: pytest.FixtureRequest, queue: str, prefix: str
) -> Iterator[tuple[Celery, Any, str]]:
    app = backpressured_app(request.param, queue, prefix, default_queue=queue)

    @app.task(base=ResilientTask, name="bp.ask", shared=False)
    def ask() -> None:
        return None

    yield app, ask, queue
    purge(app, queue)
    Resilience.of(app).store.purge()


def second_call(task: Any) -> str:
    """A fresh user's second call (its bucket holds one): what the strategy table did with it."""
    user = uuid.uuid4().hex
    task.apply_async(user_id=user)
    try:
        task.apply_async(user_id=user)
    except Throttled as refused:
        return f"rejected after {refused.retry_after:.0f}s"
    return "published"


def test_a_filling_queue_moves_callers_from_delay_to_queue_to_reject(
    backpressured: tuple[Celery, Any, str],
) -> None:
    """Past 'high' an over-limit caller is queued with a timeout; past 'critical' refused with back-off."""
    app, ask, queue = backpressured
    admission = Resilience.of(app).admission
    filler = app.tasks["bp.filler"]

    def strategy_now() -> str:
        user = uuid.uuid4().hex
        ctx = admission.context(user, None, None, None)
        admission.decide(ctx, task_name=ask.name, queue=queue)
        try:
            return admission.decide(ctx, task_name=ask.name, queue=queue).label
        except Throttled as refused:
            return f"reject_with_backoff({refused.retry_after:.0f}s)"

    assert strategy_now() == "delay"
    for _ in range(6):
        filler.apply_async(queue=queue)
    wait_for(lambda: strategy_now() == "queue_with_timeout", timeout=10)
    for _ in range(6):
        filler.apply_async(queue=queue)
    wait_for(lambda: strategy_now() == "reject_with_backoff(30s)", timeout=10)
    # And through the task's own apply_async, which resolves the queue itself:
    assert second_call(ask).startswith("rejected after 30")


def test_a_tasks_own_queue_is_the_one_whose_depth_judges_its_callers(queue: str, prefix: str) -> None:
    """A task declared with its own queue is refused when that queue is critical, the default one empty."""
    default_queue = f"{queue}-default"
    app = backpressured_app("redis", queue, prefix, default_queue)

    @app.task(base=ResilientTask, name="bp.own_queue", queue=queue, shared=False)
    def own_queue() -> None:
        return None

    try:
        assert second_call(own_queue) == "published"  # paced at normal depth
        for _ in range(11):
            app.tasks["bp.filler"].apply_async(queue=queue)
        wait_for(lambda: second_call(own_queue).startswith("rejected after 30"), timeout=10)
    finally:
        purge(app, queue)
        purge(app, default_queue)
        Resilience.of(app).store.purge()
