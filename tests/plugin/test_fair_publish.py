"""Fair queues at the publish: the tenant from ``caller(...)``, the delay of a saturated
queue in the message's ETA, and no gain from spreading a tenant's work over user ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, signals

from celery_resilience import Resilience, ResilientTask, caller
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock
from tests.conftest import Monotonic, SplitClock


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """The ``resilience`` header and the ETA of every message published meanwhile."""
    seen: list[dict[str, Any]] = []

    def capture(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append({**dict((headers or {}).get("resilience") or {}), "eta": (headers or {}).get("eta")})

    signals.before_task_publish.connect(capture, weak=False, dispatch_uid="fair-test")
    yield seen
    signals.before_task_publish.disconnect(dispatch_uid="fair-test")


def saturated_app(fair: bool = True) -> tuple[Any, Monotonic]:
    """An app whose queue holds five messages (its saturation depth), at ten tasks a second."""
    queue = f"fair-{uuid.uuid4().hex[:8]}"
    app = Celery("fair", broker="memory://localhost/", set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        resilience_tiers={"free": {"rate": "1000/s", "burst": 1000}, "gold": {"rate": "1000/s", "weight": 3}},
        resilience_default_tier="free",
        **({"resilience_fair_queues": {queue: {"depth": 5, "capacity": "10/s"}}} if fair else {}),
    )
    wall, mono = FakeClock(), Monotonic()
    Resilience(app, store=MemoryStore(KeySpace("fair", 4), clock=wall), clock=SplitClock(wall, mono))

    @app.task(base=ResilientTask, name="fair.ask", shared=False)
    def ask() -> None:
        return None

    with caller(user_id="before"):
        for _ in range(5):
            ask.delay()
    mono.now += 1.0  # the depth probe's next reading sees them
    return ask, mono


def flood(ask: Any, users: int, tenant: str | None = "acme", count: int = 40) -> None:
    for index in range(count):
        with caller(user_id=f"user-{index % users}", tenant=tenant):
            ask.delay()


def delays(published: list[dict[str, Any]]) -> list[float]:
    return [float(header.get("fair_delay", 0.0)) for header in published]


def test_a_tenant_split_over_twenty_user_ids_gains_nothing(published: list[dict[str, Any]]) -> None:
    """A tenant's forty tasks are held back alike from one user id or twenty; the header names the tenant."""
    ask, _ = saturated_app()
    flood(ask, users=1)
    alone = delays(published[5:])
    published.clear()
    ask, _ = saturated_app()
    flood(ask, users=20)
    split = delays(published[5:])
    assert alone == pytest.approx(split) and alone[-1] == pytest.approx(3.9)
    assert {header["tenant"] for header in published[5:]} == {"acme"}
    assert all(header["eta"] is not None for header in published[6:])


def test_without_a_tenant_each_user_is_its_own(published: list[dict[str, Any]]) -> None:
    """Left out, the tenant is the user: twenty users each have a tag of their own."""
    ask, _ = saturated_app()
    flood(ask, users=20, tenant=None)
    assert max(delays(published[5:])) < 3.0
    assert all("tenant" not in header for header in published)


def test_a_quiet_tenant_goes_first_and_weights_count(published: list[dict[str, Any]]) -> None:
    """After a flood a quiet tenant's task is not held back; a weight-3 tier's flood takes 3 shares."""
    ask, _ = saturated_app()
    flood(ask, users=1)
    with caller(user_id="quiet-user", tenant="quiet"):
        ask.delay()
    assert "fair_delay" not in published[-1] and published[-1]["eta"] is None
    published.clear()
    with caller(user_id="g", tier="gold", tenant="gold-co"):
        for _ in range(10):
            ask.delay()
    gold = delays(published)
    # Booked beside acme and quiet (weight 1 each): gold's 3 of 5 shares of ten tasks a second.
    assert gold[0] == 0.0 and gold[1] == pytest.approx(round((1 + 1 + 3) / (3 * 10.0), 3))


def test_a_queue_not_fair_or_not_saturated_is_not_delayed(published: list[dict[str, Any]]) -> None:
    """Fairness off (the default), or a fair queue below its depth: no publish is held back."""
    ask, _ = saturated_app(fair=False)
    flood(ask, users=1)
    assert delays(published) == [0.0] * 45 and all(header["eta"] is None for header in published)
    published.clear()
    saturated_app(fair=True)  # its five publishes found the queue below its depth
    assert delays(published) == [0.0] * 5 and all(header["eta"] is None for header in published)


def test_only_a_hold_of_fairness_alone_may_be_started_early(published: list[dict[str, Any]]) -> None:
    """A held publish names its hold's end; one whose caller set its own countdown does not."""
    ask, _ = saturated_app()
    flood(ask, users=1, count=3)
    held = [header for header in published[5:] if header.get("fair_delay")]
    assert held and all(header["fair_until"] > 0 and "fair_only" not in header for header in held)
    published.clear()
    with caller(user_id="user-0", tenant="acme"):
        ask.apply_async(countdown=0.5)
    assert published[0].get("fair_delay") and "fair_until" not in published[0]
