"""The caller's identity without keywords: ``caller(...)``, typos, anonymous calls, by name."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, signals

from celery_resilience import Resilience, ResilientTask, Throttled, caller


def make_app(**conf: Any) -> tuple[Celery, Any]:
    app = Celery("caller", broker="memory://localhost/", set_as_current=False)
    app.conf.update(
        resilience_tiers={"free": {"rate": "1/h", "burst": 1}, "pro": {"rate": "1/h", "burst": 3}},
        resilience_default_tier="free",
        resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 5}],
        **{f"resilience_{k}": v for k, v in conf.items()},
    )
    Resilience(app)

    @app.task(base=ResilientTask, name="caller.ask", shared=False)
    def ask(prompt: str = "hi") -> str:
        return prompt

    return app, ask


@pytest.fixture
def headers() -> Iterator[list[dict[str, Any]]]:
    """The ``resilience`` header of every message published meanwhile."""
    seen: list[dict[str, Any]] = []

    def capture(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append(dict((headers or {}).get("resilience") or {}))

    signals.before_task_publish.connect(capture, weak=False, dispatch_uid="caller-test")
    yield seen
    signals.before_task_publish.disconnect(dispatch_uid="caller-test")


def test_delay_inside_caller_is_admitted_for_that_caller(headers: list[dict[str, Any]]) -> None:
    """``delay()`` inside ``caller(...)`` is admitted for that user and tier; keywords still win."""
    _, ask = make_app()
    with caller(user_id="u1", tier="pro"):
        ask.delay()
        ask.apply_async(tier="free")
    assert headers[0] == {"user_id": "u1", "tier": "pro", "request_type": "default", "decision": "allow"}
    assert (headers[1]["user_id"], headers[1]["tier"]) == ("u1", "free")


def test_nested_callers_refine_the_outer_one(headers: list[dict[str, Any]]) -> None:
    """An inner context names what it changes and inherits the rest; leaving it restores the outer."""
    _, ask = make_app()
    with caller(user_id="u1", tier="pro"):
        with caller(request_type="batch"):
            ask.delay()
        ask.delay()
    assert [(h["user_id"], h["tier"], h["request_type"]) for h in headers] == [
        ("u1", "pro", "batch"),
        ("u1", "pro", "default"),
    ]


def test_the_context_follows_asyncio_and_stays_out_of_plain_threads(headers: list[dict[str, Any]]) -> None:
    """The context follows awaits and to_thread; a plain thread sees it only with a copied context."""
    _, ask = make_app()

    @caller(user_id="async-user", tier="pro")
    async def handler() -> None:
        await asyncio.sleep(0)
        ask.delay()
        await asyncio.to_thread(ask.delay)  # to_thread copies the context

    asyncio.run(handler())
    with caller(user_id="threaded"):
        plain = threading.Thread(target=ask.delay)
        copied = threading.Thread(target=contextvars.copy_context().run, args=(ask.delay,))
        for thread in (plain, copied):
            thread.start()
            thread.join()
    assert [h["user_id"] for h in headers] == ["async-user", "async-user", None, "threaded"]


@pytest.mark.parametrize(
    ("typo", "meant"), [("userid", "user_id"), ("teir", "tier"), ("request-type", "request_type")]
)
def test_a_near_miss_of_our_keywords_raises_before_anything_is_admitted(typo: str, meant: str) -> None:
    """``userid=``, ``teir=``, ``request-type=`` raise naming the right keyword, not message properties."""
    _, ask = make_app()
    with pytest.raises(TypeError, match=f"did you mean {meant!r}"):
        ask.apply_async(**{typo: "x"})
    ask.apply_async(user_id="fresh")  # nothing was spent: the first call is still admitted


def test_calls_naming_no_user_share_a_bucket_pass_ungated_or_are_refused(
    headers: list[dict[str, Any]],
) -> None:
    """The anonymous policy is a setting: shared (one bucket per tier), ungated (counted) or refuse."""
    _, shared = make_app()
    shared.delay()
    with pytest.raises(Throttled):
        shared.delay()

    app, ungated = make_app(anonymous_calls="ungated")
    for _ in range(3):
        ungated.delay()
    assert [h["decision"] for h in headers[-3:]] == ["ungated"] * 3
    assert Resilience.of(app).store.metrics()["ungated"] == 3

    _, refusing = make_app(anonymous_calls="refuse")
    with pytest.raises(ValueError, match="must name its user"):
        refusing.delay()
    refusing.apply_async(user_id="u")


def test_send_task_of_a_gated_name_is_admitted_like_apply_async(headers: list[dict[str, Any]]) -> None:
    """Gated names published by name are admitted and refused like apply_async; others count as ungated."""
    app, _ = make_app(gated_tasks={"caller.remote": {"request_type": "interactive"}})
    with caller(user_id="web-user"):
        app.send_task("caller.remote", ("hi",))
        with pytest.raises(Throttled):
            app.send_task("caller.remote", ("again",))
    app.send_task("caller.elsewhere")
    assert headers[0] == {
        "user_id": "web-user",
        "tier": "free",
        "request_type": "interactive",
        "decision": "allow",
    }
    assert headers[1] == {}
    assert Resilience.of(app).store.metrics()["ungated"] == 1
