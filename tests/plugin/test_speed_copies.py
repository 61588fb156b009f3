"""The publish path repeats five checks inline that a helper also makes, for speed (each
site says so); these tests hold each copy and its helper to the same answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_resilience import Resilience, ResilientTask
from celery_resilience.admission.gate import Admission, ConstantSeverity
from celery_resilience.extension import _registered
from celery_resilience.load.monitor import LoadMonitor
from celery_resilience.load.settings import read_load_settings
from celery_resilience.load.signals import HealthSnapshot
from celery_resilience.publishing import PublishGate, _ThisProcess, continued_context
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader
from tests.conftest import Monotonic, SplitClock


def _app(**conf: Any) -> Celery:
    app = Celery("copies", broker="memory://", set_as_current=False)
    app.conf.update(task_always_eager=True, resilience_store_url="memory://", **conf)
    return app


def test_resilience_of_finds_what_registered_finds() -> None:
    """``Resilience.of`` and ``_registered`` agree before and after an app gets its extension."""
    app = _app()
    assert _registered(app) is None
    made = Resilience.of(app)
    assert _registered(app) is made and Resilience.of(app) is made


@pytest.mark.parametrize("routes", [None, {"t.routed": {"queue": "elsewhere"}}])
def test_route_reads_the_routing_that_routing_reads(routes: Any) -> None:
    """``route``'s inline read of the routing memo gives what ``routing()`` gives, first call or later."""
    app = _app(task_routes=routes, task_default_queue="main")
    resilience = Resilience(app)
    first = resilience.route("t.plain", (), {}, {})
    routes_on, default = resilience.routing()
    assert first == resilience.route("t.plain", (), {}, {}) == default == "main"
    assert routes_on is bool(routes)
    assert resilience.route("t.routed", (), {}, {}) == ("elsewhere" if routes else "main")


def test_situation_refreshes_when_severity_would() -> None:
    """``situation``'s inline freshness check refreshes exactly when ``_refresh`` itself would."""
    clock, mono = FakeClock(), Monotonic()
    store = MemoryStore(KeySpace("copies", 4), clock=clock)
    settings = read_load_settings(SettingsReader({"resilience_adaptive_interval": 5}))

    def monitor() -> LoadMonitor:
        return LoadMonitor(settings, lambda: store, None, lambda name: None, clock=SplitClock(clock, mono))

    inline, helper = monitor(), monitor()
    seen: set[tuple[object, float]] = set()
    for step, cpu in enumerate((0.1, 0.95, 0.95, 0.1, 0.5, 0.99, 0.1)):
        store.publish_health(HealthSnapshot("w", clock(), cpu, 0.2, 0.1, 3, {}))
        by_helper = (helper.severity(None), round(helper.factors(None, None).product, 4))
        assert inline.situation(None, None) == by_helper, step
        seen.add(by_helper)
        clock.advance(2.5)
        mono.now += 2.5
    assert len(seen) >= 2  # the situation changed, and both followed it


def _ran_a_task(ran: bool) -> Iterator[None]:
    before = _ThisProcess.ran_a_task
    _ThisProcess.ran_a_task = ran
    yield
    _ThisProcess.ran_a_task = before


@pytest.fixture
def task_ran() -> Iterator[None]:
    """This process counts as one that has run a task, then as before."""
    yield from _ran_a_task(True)


@pytest.fixture
def no_task_ran() -> Iterator[None]:
    """This process counts as one that has not run a task yet, then as before."""
    yield from _ran_a_task(False)


def _passes(app: Celery, user_id: object) -> bool:
    clock = FakeClock()
    admission = Admission(
        ResilienceSettings.from_conf({}).admission,
        lambda: MemoryStore(KeySpace("p", 4), clock=clock),
        severity=ConstantSeverity(),
    )
    gate = PublishGate(admission, clock, "shared", lambda *args: None)
    return gate.passes(app, {}, {}, "t.task", user_id)


def test_passes_skips_what_continued_context_would_not_find(no_task_ran: None) -> None:
    """Until a task has run, ``passes`` says no without asking, as ``continued_context`` says None."""
    app = _app()
    for user in (None, "u"):
        assert continued_context(app, user) is None and not _passes(app, user)


def test_passes_follows_continued_context_inside_a_running_task(task_ran: None) -> None:
    """Inside a running task and outside one, ``passes`` and ``continued_context`` agree."""
    app = _app()
    seen: list[tuple[bool, bool]] = []

    @app.task(base=ResilientTask, bind=True, name="copies.inside")
    def inside(self: Any) -> None:
        self.request.resilience = {"user_id": "u", "decision": "admitted"}  # as a worker reads the header
        for user in (None, "u", "someone else"):
            seen.append((continued_context(app, user) is not None, _passes(app, user)))

    Resilience(app)
    inside.apply()
    assert seen == [(True, True), (True, True), (False, False)]
    assert continued_context(app, "u") is None and not _passes(app, "u")


@pytest.mark.parametrize("resolver", [None, lambda uid: "enterprise" if uid == "corp" else None])
def test_admit_call_finds_the_caller_named_caller_finds(resolver: Any) -> None:
    """``admit_call``'s inline memo lookup resolves every caller as ``context`` does, first or again."""
    tiers = {"free": {"rate": "600/m", "burst": 5}, "enterprise": {"rate": "6000/m", "burst": 5}}
    conf = {
        "resilience_tiers": tiers,
        "resilience_default_tier": "free",
        "resilience_tier_resolver": resolver,
    }
    settings = ResilienceSettings.from_conf(conf)
    store = MemoryStore(KeySpace("n", 4), clock=FakeClock())
    inline = Admission(settings.admission, lambda: store, severity=ConstantSeverity())
    helper = Admission(settings.admission, lambda: store, severity=ConstantSeverity())
    callers: list[tuple[object, str | None, str | None]] = [
        ("u", None, None), ("corp", None, None), ("corp", "free", None), (7, None, None),
        (True, None, None), (None, None, None), ("u", None, "batch"),
    ]  # fmt: skip
    for _ in range(2):
        for user_id, tier, request_type in callers:
            ctx, _verdict = inline.admit_call(user_id, tier, request_type, None, task_name="t")
            assert ctx == helper.context(user_id, tier, request_type, None)
    with pytest.raises(TypeError, match="user_id"):
        inline.admit_call(["u"], None, None, None, task_name="t")
