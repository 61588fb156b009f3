"""Admission through real Celery: a Redis broker, the Redis store, and a worker process."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from types import ModuleType
from typing import Any

import pytest
from celery import chain
from celery.exceptions import TaskRevokedError

from celery_resilience import Resilience, Throttled, caller
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def app_module(worker: Any) -> ModuleType:
    from tests.integration import workerapp

    return workerapp


def fresh_user() -> str:
    return f"user:{uuid.uuid4().hex[:8]}"


def metric(module: ModuleType, name: str) -> float:
    """A counter summed over this minute and the last, so a minute boundary cannot hide it."""
    store = Resilience.of(module.app).store
    minute = int(store.now() // 60)
    return sum(store.metrics(m).get(name, 0.0) for m in (minute - 1, minute))


def test_context_reaches_the_worker_and_tiers_and_users_are_separate(app_module: ModuleType) -> None:
    """A pro user gets burst 3 and grace 2; a free user burst 1; both see their context on the worker."""
    pro, free = fresh_user(), fresh_user()
    pro_results = [app_module.whoami.apply_async(user_id=pro, tier="pro") for _ in range(5)]
    free_results = [app_module.whoami.apply_async(user_id=free) for _ in range(2)]
    pro_seen = [r.get(timeout=30)["context"] for r in pro_results]
    free_seen = [r.get(timeout=30)["context"] for r in free_results]
    assert [c["decision"] for c in pro_seen] == ["allow"] * 3 + ["allow_with_grace"] * 2
    assert [c["decision"] for c in free_seen] == ["allow", "delay"]
    assert pro_seen[0] == {"user_id": pro, "tier": "pro", "request_type": "interactive", "decision": "allow"}
    assert free_seen[0]["tier"] == "free"


def test_work_that_names_no_request_type_gets_burst_and_grace_in_full(
    integration_env: dict[str, str],
) -> None:
    """A task naming no request type is critical: burst 10 and grace 5 put 15 messages in the broker."""
    from celery import Celery

    from celery_resilience import ResilientTask
    from tests.conftest import REDIS_URL, store_url

    queue = f"{integration_env['RESILIENCE_TEST_QUEUE']}-defaults"
    app = Celery("defaults", broker=f"{REDIS_URL}/11", set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        resilience_store_url=store_url(),
        resilience_key_prefix=integration_env["RESILIENCE_TEST_PREFIX"],
        resilience_tiers={"free": {"rate": "1/h", "burst": 10, "grace": 5}},
        resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 30}],
    )
    Resilience(app)

    @app.task(base=ResilientTask, name="defaults.ordinary")
    def ordinary() -> None:
        return None

    user = fresh_user()
    decisions = [ordinary.apply_async(user_id=user) for _ in range(15)]
    with pytest.raises(Throttled):
        ordinary.apply_async(user_id=user)
    with app.connection_for_read() as connection:
        queued = channel_of(connection).queue_declare(queue=queue, passive=True).message_count
        channel_of(connection).queue_purge(queue)
    assert len(decisions) == 15 and queued == 15


def test_a_publish_the_broker_refuses_gives_the_token_back(integration_env: dict[str, str]) -> None:
    """A publish the broker refuses raises to the caller, gives its token back and is counted."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    from celery_resilience import ResilientTask
    from celery_resilience.monitoring.summary import MetricsReader
    from tests.conftest import REDIS_URL, store_url

    def app_on(broker: str) -> tuple[Celery, Any]:
        app = Celery("refund", broker=broker, set_as_current=False)
        app.conf.update(
            task_default_queue=f"{integration_env['RESILIENCE_TEST_QUEUE']}-refund",
            task_publish_retry=False,
            broker_transport_options={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
            resilience_store_url=store_url(),
            resilience_key_prefix=integration_env["RESILIENCE_TEST_PREFIX"],
            resilience_tiers={"free": {"rate": "1/h", "burst": 1}},
            resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 30}],
        )
        Resilience(app)

        @app.task(base=ResilientTask, name="refund.work", shared=False)
        def work() -> None:
            return None

        return app, work

    user = fresh_user()
    _, broken = app_on("amqp://guest:guest@127.0.0.1:1//")
    working_app, working = app_on(f"{REDIS_URL}/11")
    with pytest.raises(OperationalError):
        broken.apply_async(user_id=user)
    working.apply_async(user_id=user)  # the token given back
    with pytest.raises(Throttled):
        working.apply_async(user_id=user)
    reader = MetricsReader(Resilience.of(working_app).store)
    minute = reader.current_minute()
    assert sum(reader.minute(m).publish_failed for m in (minute - 1, minute)) >= 1
    with working_app.connection_for_write() as connection:
        channel_of(connection).queue_purge(working.app.conf.task_default_queue)


def test_a_delayed_task_runs_later(app_module: ModuleType) -> None:
    """DELAY publishes with a countdown: the worker receives an ETA and does not run the task before it."""
    user = fresh_user()
    app_module.whoami.apply_async(user_id=user).get(timeout=30)
    published = time.time()
    seen = app_module.whoami.apply_async(user_id=user).get(timeout=30)
    assert seen["context"]["decision"] == "delay"
    eta = datetime.fromisoformat(seen["eta"]).timestamp()
    assert eta >= published + 0.9
    assert seen["ran_at"] >= eta


def test_a_rejected_call_raises_and_is_counted(app_module: ModuleType) -> None:
    """REJECT_WITH_BACKOFF raises Throttled to the caller, with the policy's back-off, and counts it."""
    user = fresh_user()
    before = metric(app_module, "throttled:reject_with_backoff")
    assert app_module.add.apply_async((1, 2), user_id=user).get(timeout=30) == 3
    with pytest.raises(Throttled) as caught:
        app_module.add.apply_async((1, 2), user_id=user)
    assert caught.value.retry_after >= 30
    assert caught.value.task_name == app_module.add.name
    assert metric(app_module, "throttled:reject_with_backoff") == before + 1


def test_an_expired_queued_task_is_counted_and_the_caller_sees_it(app_module: ModuleType) -> None:
    """A queued task past its expiry is revoked, counted as expired, and its caller sees the revocation."""
    user, flag = fresh_user(), f"{app_module.PREFIX}:flag:{uuid.uuid4().hex}"
    before = metric(app_module, "expired")
    blocker = app_module.block.delay(flag)
    try:
        first = app_module.whoami.apply_async(user_id=user, request_type="queued")
        queued = app_module.whoami.apply_async(user_id=user, request_type="queued")
        published = time.time()
        # The slot is ~1 s away and the timeout 0.5 s: once 1.5 s have passed, it has expired.
        wait_for(lambda: time.time() > published + 1.6)
    finally:
        app_module._signals.set(flag, 1, ex=60)
    assert blocker.get(timeout=30) is True
    assert first.get(timeout=30)["context"]["decision"] == "allow"
    with pytest.raises(TaskRevokedError):
        queued.get(timeout=30)
    wait_for(lambda: metric(app_module, "expired") == before + 1)
    assert metric(app_module, "throttled:queue_with_timeout") >= 1


def test_retries_pass_the_gate(app_module: ModuleType) -> None:
    """A retry is republished by the worker even when the user's bucket is empty; nothing is lost."""
    user = fresh_user()
    assert app_module.flaky.apply_async((2,), user_id=user).get(timeout=30) == "ok after 2 retries"


def test_chain_steps_published_by_the_worker_pass_the_gate(app_module: ModuleType) -> None:
    """The chain is admitted at its head; later steps are not refused mid-way."""
    user = fresh_user()
    steps = chain(app_module.add.s(1, 2), app_module.add.s(3), app_module.add.s(4))
    assert steps.apply_async(user_id=user, tier="slow").get(timeout=30) == 10
    with pytest.raises(Throttled):
        app_module.add.apply_async((0, 0), user_id=user, tier="slow")


def test_every_chain_step_link_and_errback_carries_the_caller(app_module: ModuleType) -> None:
    """A chain's next step, a link and an errback, published by the worker, carry the caller's context."""
    import json

    user, key = fresh_user(), f"{app_module.PREFIX}:errback:{uuid.uuid4().hex}"
    caller = {"user_id": user, "tier": "pro", "request_type": "interactive"}
    steps = chain(app_module.context_of.s(), app_module.context_of.s())
    second = steps.apply_async(user_id=user, tier="pro", request_type="interactive").get(timeout=30)
    assert second["user_id"] == user and second["context"] == {**caller, "decision": "passed"}

    linked = app_module.whoami.apply_async(
        user_id=user, tier="pro", request_type="interactive", link=app_module.context_of.s()
    )
    linked.get(timeout=30)
    wait_for(lambda: bool(linked.children) or bool(_children(app_module, linked.id)))
    # The link's result is read from the backend, not awaited over pub/sub: it may have
    # finished before this process could subscribe to it.
    child = _children(app_module, linked.id)[0]
    wait_for(child.ready, timeout=60)
    callback = child.result
    assert callback["context"] == {**caller, "decision": "passed"}

    failing = app_module.fail.apply_async(
        user_id=user,
        tier="pro",
        request_type="interactive",
        link_error=app_module.remember_context.si("", key),
    )
    with pytest.raises(ValueError, match="always fails"):
        failing.get(timeout=30)
    wait_for(lambda: app_module._signals.get(key) is not None)
    assert json.loads(app_module._signals.get(key)) == {**caller, "decision": "passed"}


def _children(module: ModuleType, task_id: str) -> list[Any]:
    """The results of the tasks a finished task published (from its stored result)."""
    from celery.result import AsyncResult

    return list(AsyncResult(task_id, app=module.app).children or [])


def test_delay_inside_caller_reaches_the_worker_as_that_caller(app_module: ModuleType) -> None:
    """``delay()`` inside ``caller(...)`` is admitted for that caller, whose context the worker sees."""
    user = fresh_user()
    with caller(user_id=user, tier="pro"):
        seen = app_module.whoami.delay().get(timeout=30)["context"]
    assert seen == {"user_id": user, "tier": "pro", "request_type": "interactive", "decision": "allow"}


def test_a_gated_task_published_by_name_is_admitted_and_run_for_its_caller(app_module: ModuleType) -> None:
    """send_task by name of a gated task is admitted as apply_async is, and the worker sees its caller."""
    user = fresh_user()
    with caller(user_id=user):
        first = app_module.app.send_task("tests.integration.workerapp.context_of")
        second = app_module.app.send_task("tests.integration.workerapp.context_of")
    assert first.get(timeout=30)["context"] == {
        "user_id": user,
        "tier": "free",
        "request_type": "interactive",
        "decision": "allow",
    }
    assert second.get(timeout=30)["context"]["decision"] == "delay"


def test_send_task_publishes_are_counted_as_ungated(app_module: ModuleType) -> None:
    """Publishes by name of a resilient task skip the gate and are counted, each; plain tasks never."""
    before = metric(app_module, "ungated")
    for _ in range(2):  # the second time, the app knows each name already
        app_module.app.send_task(app_module.whoami.name).get(timeout=30)
        app_module.ping.delay().get(timeout=30)
        app_module.app.send_task(app_module.ping.name).get(timeout=30)
    assert metric(app_module, "ungated") == before + 2


def _stored_result(module: ModuleType, task_id: str) -> Any:
    """The result the worker stored for a task this process did not publish, read from the
    backend: Celery 5.5.0's Redis result consumer can miss the announcement of such a result
    (seen on the oldest releases the package admits), so ``get()`` would wait on a result
    that is there."""
    from celery.result import AsyncResult

    result: AsyncResult[Any] = AsyncResult(task_id, app=module.app)
    wait_for(result.ready, timeout=60)
    return result.result


def test_work_a_running_task_spawns_passes_and_carries_its_context(app_module: ModuleType) -> None:
    """Children an admitted task publishes for no user pass the gate and carry the parent's user."""
    user = fresh_user()
    ids = app_module.fan_out.apply_async((3,), user_id=user).get(timeout=60)
    contexts: list[dict[str, Any]] = [_stored_result(app_module, i)["context"] for i in ids]
    assert [c["decision"] for c in contexts] == ["passed"] * 3
    assert all(c["user_id"] == user for c in contexts)


def test_work_a_running_task_publishes_for_another_user_is_admitted(app_module: ModuleType) -> None:
    """A task enqueuing work for other users (a scheduler) does not bypass their limits."""
    other = fresh_user()
    ids = app_module.fan_out.apply_async((2, other), user_id=fresh_user()).get(timeout=60)
    decisions: list[str] = [_stored_result(app_module, i)["context"]["decision"] for i in ids]
    assert decisions == ["allow", "delay"]


def test_a_chord_body_published_by_the_backend_is_not_refused(app_module: ModuleType) -> None:
    """A chord's body published by the result backend passes though the user's bucket is empty."""
    from celery import chord

    user = fresh_user()
    result = chord([app_module.add.s(1, 2)], app_module.total.s()).apply_async(user_id=user)
    assert result.get(timeout=60) == 3


def test_a_group_over_the_limit_runs_whole_at_the_tiers_rate(app_module: ModuleType) -> None:
    """A group over the limit is refused only at its first member; the rest run paced, all results come."""
    from celery import group

    user = fresh_user()
    result = group(app_module.add.s(i, i) for i in range(3)).apply_async(user_id=user)
    assert result.get(timeout=60) == [0, 2, 4]


def channel_of(connection: Any) -> Any:
    """The connection's default channel, whose queue methods kombu's types do not declare."""
    return connection.default_channel
