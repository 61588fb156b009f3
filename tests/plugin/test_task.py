"""ResilientTask as a base class and as the app's default task class."""

from __future__ import annotations

import pickle
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest
from celery import Celery

from celery_resilience import Resilience, ResilientTask, Throttled

STRICT = {
    "resilience_tiers": {"t": {"rate": "1/h", "burst": 1}},
    "resilience_throttle_strategies": [{"strategy": "reject_with_backoff", "seconds": 5}],
}


def make_app(**kwargs: object) -> Celery:
    app = Celery("t", broker="memory://localhost/", set_as_current=False, **kwargs)  # type: ignore[arg-type]
    app.conf.update(STRICT)
    Resilience(app)
    return app


def test_default_task_class_gates_plain_decorated_tasks() -> None:
    """With task_cls=ResilientTask, an ordinary @app.task is admitted like any resilient task."""
    app = make_app(task_cls=ResilientTask)

    @app.task(name="t.work", shared=False)
    def work() -> None:
        return None

    work.apply_async()
    with pytest.raises(Throttled):
        work.apply_async()


def test_celery_builtin_tasks_are_never_gated() -> None:
    """Chord unlocking and result clean-up inherit the default class but must always publish."""
    app = make_app(task_cls=ResilientTask)
    app.finalize()
    cleanup = app.tasks["celery.backend_cleanup"]
    assert isinstance(cleanup, ResilientTask)
    for _ in range(3):
        cleanup.apply_async()


def test_plain_tasks_are_untouched_without_the_base() -> None:
    """A task that does not use ResilientTask is never admitted, counted or refused."""
    app = make_app()

    @app.task(name="t.plain", shared=False)
    def plain() -> None:
        return None

    for _ in range(3):
        plain.apply_async()
    assert Resilience.of(app).store.metrics() == {}


def test_our_keywords_do_not_leak_into_message_properties() -> None:
    """user_id, tier and request_type are consumed by the gate; the worker sees them in the header."""
    app = make_app()
    sent: list[dict[str, object]] = []

    @app.task(base=ResilientTask, name="t.gated", shared=False)
    def gated() -> None:
        return None

    from celery import signals

    def capture(
        headers: dict[str, object] | None = None, properties: dict[str, object] | None = None, **_: object
    ) -> None:
        sent.append({"headers": headers, "properties": properties})

    signals.before_task_publish.connect(capture, weak=False, dispatch_uid="capture-test")
    try:
        gated.apply_async(user_id="u1", tier="t", request_type="interactive")
    finally:
        signals.before_task_publish.disconnect(dispatch_uid="capture-test")
    headers, properties = sent[0]["headers"], sent[0]["properties"]
    assert isinstance(headers, dict) and isinstance(properties, dict)
    assert headers["resilience"] == {
        "user_id": "u1",
        "tier": "t",
        "request_type": "interactive",
        "decision": "allow",
    }
    assert not {"user_id", "tier", "request_type"} & set(properties)


def test_throttled_survives_pickling() -> None:
    """Result backends and process pools pickle exceptions: retry_after must survive."""
    error = Throttled(12.5, task_name="t.x", user_id="u", tier="free", request_type="batch")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, Throttled)
    assert (copy.retry_after, copy.user_id, copy.tier) == (12.5, "u", "free")
    assert str(copy) == str(error)


def test_exceptions_survive_celerys_json_result_serialisation() -> None:
    """Celery rebuilds task exceptions as cls(*args): callers get Throttled and CircuitOpen back."""
    from celery.backends.base import Backend

    from celery_resilience import CircuitOpen

    backend = Backend(app=Celery("x", set_as_current=False), serializer="json")
    for error in (Throttled(3.0, "t.x", "u", "free", "batch", "policy"), CircuitOpen("ai", "open", 12.0)):
        rebuilt = backend.exception_to_python(backend.prepare_exception(error, "json"))
        assert type(rebuilt) is type(error)
        assert str(rebuilt) == str(error)


class Published:
    """Collects the resilience decision and ETA of every message published inside the block."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def __enter__(self) -> Published:
        from celery import signals

        signals.before_task_publish.connect(self._capture, weak=False, dispatch_uid="published-test")
        return self

    def __exit__(self, *exc: object) -> None:
        from celery import signals

        signals.before_task_publish.disconnect(dispatch_uid="published-test")

    def _capture(self, headers: dict[str, Any] | None = None, **_: object) -> None:
        assert headers is not None
        self.sent.append({"decision": headers["resilience"]["decision"], "eta": headers.get("eta")})


def test_a_group_over_the_limit_is_published_whole_with_its_later_members_paced() -> None:
    """Once a group's first member is out, later members over the limit are paced, never refused."""
    from celery import group

    app = make_app()

    @app.task(base=ResilientTask, name="t.member", shared=False)
    def member(i: int) -> int:
        return i

    with Published() as published:
        result = group(member.s(i) for i in range(4)).apply_async(user_id="u")
    assert len(result.results) == 4  # type: ignore[attr-defined]
    assert [m["decision"] for m in published.sent] == ["allow", "delay", "delay", "delay"]
    assert published.sent[0]["eta"] is None
    etas = [datetime.fromisoformat(str(m["eta"])) for m in published.sent[1:]]
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(etas)]
    assert gaps == [pytest.approx(3600, abs=5)] * 2


def test_a_group_refused_at_its_first_member_publishes_nothing() -> None:
    """Refusing the first member refuses the whole group before any of it is published."""
    from celery import group

    app = make_app()

    @app.task(base=ResilientTask, name="t.member", shared=False)
    def member(i: int) -> int:
        return i

    member.apply_async((0,), user_id="u")  # the user's only token
    with Published() as published, pytest.raises(Throttled):
        group(member.s(i) for i in range(3)).apply_async(user_id="u")
    assert published.sent == []
