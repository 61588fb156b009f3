"""Start-time fair queueing per tenant: the pure tags, the publish-side switch, settings."""

from __future__ import annotations

from typing import Any

import pytest

from celery_resilience.errors import ConfigurationError, StoreUnavailable
from celery_resilience.load.fair_queue import FairQueues
from celery_resilience.load.fairness import (
    CAPACITY_STALE,
    FairPolicy,
    FairQueue,
    priority_level,
    report_capacity,
    start_tag,
)
from celery_resilience.load.settings import read_load_settings
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock
from celery_resilience.validation import SettingsReader
from tests.conftest import Monotonic, SplitClock


def served_order(offers: dict[str, int], weights: dict[str, float], capacity: float = 10.0) -> list[str]:
    """Every tenant offers its tasks at once at t=0: the order their delays release them in."""
    queue = FairQueue()
    tagged: list[tuple[float, int, str]] = []
    index = 0
    remaining = dict(offers)
    while any(remaining.values()):  # arrivals interleaved, as concurrent publishers would
        for tenant in offers:
            if remaining[tenant]:
                remaining[tenant] -= 1
                delay = start_tag(queue, tenant, weights.get(tenant, 1.0), 1.0, 0.0, 1e9, capacity).delay
                tagged.append((delay, index, tenant))
                index += 1
    return [tenant for _, _, tenant in sorted(tagged)]


def test_a_flooding_tenant_does_not_delay_a_quiet_one() -> None:
    """A tenant's 100 booked tasks are spaced at the service rate; a quiet one arriving later starts now."""
    queue = FairQueue()
    delays = [start_tag(queue, "noisy", 1.0, 1.0, 0.0, 1e9, 10.0).delay for _ in range(100)]
    assert delays[:3] == pytest.approx([0.0, 0.1, 0.2]) and delays[-1] == pytest.approx(9.9)
    assert start_tag(queue, "quiet", 1.0, 1.0, 0.5, 1e9, 10.0).delay == 0.0


def test_equal_weights_alternate_and_weights_share_in_proportion() -> None:
    """Two equal tenants are released in turn; a weight of 3 gets three of every four slots."""
    even = served_order({"a": 20, "b": 20}, {})
    assert even[:20].count("a") == even[:20].count("b") == 10
    weighted = served_order({"gold": 40, "free": 40}, {"gold": 3.0})
    assert weighted[:20].count("gold") == pytest.approx(15, abs=1)


def test_an_idle_tenant_hoards_no_credit() -> None:
    """A tenant idle for an hour starts at now; its burst is spaced as a newcomer's, not released at once."""
    queue = FairQueue()
    start_tag(queue, "a", 1.0, 1.0, 0.0, 1e9, 10.0)
    later = [start_tag(queue, "a", 1.0, 1.0, 3600.0, 1e9, 10.0).delay for _ in range(5)]
    assert later == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_cost_charges_a_tenant_by_its_work() -> None:
    """A tenant whose tasks cost ten times more (reserved tokens) is released ten times more slowly."""
    order = []
    queue = FairQueue()
    for index in range(40):
        for tenant, cost in (("long", 1000.0), ("short", 100.0)):
            order.append((start_tag(queue, tenant, 1.0, cost, 0.0, 1e9, 10.0).delay, index, tenant))
    first = [tenant for _, _, tenant in sorted(order)][:22]
    assert first.count("short") >= 5 * first.count("long")


def test_the_delay_is_capped_and_counted_per_tenant() -> None:
    """No publish is held back beyond max_delay; what was held back is counted in all and per tenant."""
    queue = FairQueue()
    delays = [start_tag(queue, "t", 1.0, 1.0, 0.0, 0.25, 10.0).delay for _ in range(6)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.25, 0.25, 0.25])
    assert queue.stats["delayed"] == queue.stats["delayed:t"] == 5
    assert queue.stats["delay_total"] == pytest.approx(1.05)


def test_service_rate_comes_from_fresh_reports_and_none_means_fifo() -> None:
    """Without a report (or a stated rate) nothing is delayed; reports add up and go stale."""
    queue = FairQueue()
    assert [start_tag(queue, "t", 1.0, 1.0, 0.0, 60.0).delay for _ in range(3)] == [0.0] * 3
    report_capacity(queue, "w1", 4.0, 0.0)
    report_capacity(queue, "w2", 6.0, 0.0)
    assert [start_tag(queue, "t", 1.0, 1.0, 1.0, 60.0).delay for _ in range(2)] == pytest.approx([0.0, 0.1])
    stale = start_tag(FairQueue(capacity={"w": (4.0, 0.0)}), "t", 1.0, 1.0, CAPACITY_STALE + 1, 60.0)
    assert stale.capacity == 0.0


class _Store:
    """A fair store that counts its calls (or fails), around a MemoryStore."""

    def __init__(self, clock: FakeClock, fail: bool = False) -> None:
        self.inner = MemoryStore(KeySpace("fair", 4), clock=clock)
        self.calls = 0
        self.fail = fail

    def fair_tag(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise StoreUnavailable("down")
        return self.inner.fair_tag(*args, **kwargs)

    def fair_capacity(self, *args: Any) -> None:
        self.inner.fair_capacity(*args)

    def fair_status(self, queue: str, kind: str = "queue") -> dict[str, float]:
        return self.inner.fair_status(queue, kind)


def _queues(store: _Store, depth: dict[str, int], mono: Monotonic, clock: FakeClock) -> FairQueues:
    policies = {"q": FairPolicy(depth=10, max_delay=60.0, capacity=10.0)}
    return FairQueues(policies, lambda: store, depth.get, clock=SplitClock(clock, mono))


def test_spare_capacity_costs_no_round_trip_and_no_delay() -> None:
    """Below the saturation depth (and for a queue not fair) nobody waits and the store is not asked."""
    clock, mono = FakeClock(), Monotonic()
    store = _Store(clock)
    fair = _queues(store, {"q": 9, "other": 10_000}, mono, clock)
    asked: list[str] = []

    def cost() -> float:
        asked.append("q")
        return 1.0

    for _ in range(50):
        assert fair.delay("q", "noisy", 1.0, cost) == 0.0
        assert fair.delay("other", "noisy", 1.0, lambda: 1.0) == 0.0
    assert store.calls == 0 and asked == []


def test_held_back_work_keeps_the_fair_order_after_the_depth_falls() -> None:
    """Once work is held back, a queue whose depth falls stays in fair order until that work is due."""
    clock, mono = FakeClock(), Monotonic()
    store = _Store(clock)
    depth = {"q": 50}
    fair = _queues(store, depth, mono, clock)
    delays = [fair.delay("q", "noisy", 1.0, lambda: 1.0) for _ in range(20)]
    assert delays[-1] == pytest.approx(1.9)
    depth["q"] = 0  # held-back work is not counted as ready by the broker
    mono.now += 1.0
    assert fair.delay("q", "noisy", 1.0, lambda: 1.0) > 0
    mono.now += 5.0
    calls = store.calls
    assert fair.delay("q", "noisy", 1.0, lambda: 1.0) == 0.0 and store.calls == calls


def test_a_store_outage_leaves_the_queue_fifo() -> None:
    """A store that does not answer costs the publish nothing but the fair order: no delay, no error."""
    clock, mono = FakeClock(), Monotonic()
    fair = _queues(_Store(clock, fail=True), {"q": 50}, mono, clock)
    assert fair.delay("q", "t", 1.0, lambda: 1.0) == 0.0


def test_worker_reports_slots_over_mean_duration() -> None:
    """A worker of four slots whose tasks take 0.1 s reports a service rate of 40 a second."""
    clock, mono = FakeClock(), Monotonic()
    store = _Store(clock)
    fair = FairQueues({"q": FairPolicy(10, 60.0)}, lambda: store, None, clock=SplitClock(clock, mono))
    fair.slots = 4
    fair.served("q", 0.1)
    fair.served("other", 5.0)  # not a fair queue: not reported
    assert store.fair_status("q")["capacity"] == pytest.approx(40.0)
    assert store.fair_status("other")["capacity"] == 0.0


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("celery", "resilience_fair_queues"),
        ({"q": {"depth": 0}}, "resilience_fair_queues['q']['depth']"),
        ({"q": {"max_delay": -1}}, "resilience_fair_queues['q']['max_delay']"),
        ({"q": {"capacity": "fast"}}, "resilience_fair_queues['q']['capacity']"),
        ({"q": {"deep": 3}}, "resilience_fair_queues['q']['deep']"),
        ({"q": {"order": "lifo"}}, "resilience_fair_queues['q']['order']"),
        ([""], "resilience_fair_queues"),
    ],
)
def test_a_wrong_fair_queue_setting_names_itself(value: object, named: str) -> None:
    """A wrong resilience_fair_queues fails at start-up, naming the key and what was expected."""
    with pytest.raises(ConfigurationError) as raised:
        read_load_settings(SettingsReader({"resilience_fair_queues": value}))
    assert raised.value.setting == named


def test_fair_queue_defaults_follow_the_queue_thresholds() -> None:
    """A listed queue is saturated from its 'high' depth (else 100) and holds work back 60 s at most."""
    settings = read_load_settings(
        SettingsReader(
            {
                "resilience_fair_queues": ["a", "b"],
                "resilience_queue_thresholds": {"a": {"high": 40, "critical": 80}},
            }
        )
    )
    assert settings.fair_queues["a"] == FairPolicy(40, 60.0, None)
    assert settings.fair_queues["b"] == FairPolicy(100, 60.0, None)


def test_a_tier_weight_is_read_and_checked() -> None:
    """A tier's weight defaults to 1; one that is not a positive number names the tier's key."""
    conf = {"resilience_tiers": {"free": {"rate": "10/s"}, "gold": {"rate": "10/s", "weight": 3}}}
    tiers = ResilienceSettings.from_conf({**conf, "resilience_default_tier": "free"}).admission.tiers
    assert (tiers["free"].weight, tiers["gold"].weight) == (1.0, 3.0)
    with pytest.raises(ConfigurationError) as raised:
        ResilienceSettings.from_conf({"resilience_tiers": {"free": {"rate": "10/s", "weight": 0}}})
    assert raised.value.setting == "resilience_tiers['free']['weight']"


def test_priority_order_levels_by_lag_and_holds_nothing_back() -> None:
    """By priority, within its share is level 0, far ahead level 3; nothing held keeps it saturated."""
    assert [priority_level(lag) for lag in (0.0, 0.5, 5.0, 30.0)] == [0, 1, 2, 3]
    clock, mono = FakeClock(), Monotonic()
    store = _Store(clock)
    depth = {"q": 50}
    policies = {"q": FairPolicy(depth=10, max_delay=60.0, capacity=10.0, order="priority")}
    fair = FairQueues(policies, lambda: store, depth.get, clock=SplitClock(clock, mono))
    lags = [fair.delay("q", "noisy", 1.0, lambda: 1.0) for _ in range(20)]
    assert lags[-1] > 1.0
    depth["q"] = 0  # nothing is held back: the broker's count is the whole queue
    assert fair.delay("q", "noisy", 1.0, lambda: 1.0) == 0.0


class _Transport:
    def __init__(self, driver_type: str) -> None:
        self.driver_type = driver_type


class _App:
    def __init__(self, driver_type: str) -> None:
        self.driver_type = driver_type

    def connection_for_write(self) -> Any:
        return type("Connection", (), {"transport": _Transport(self.driver_type)})()


@pytest.mark.parametrize(("driver", "priorities"), [("redis", [0, 3, 6, 9]), ("amqp", [9, 6, 3, 0])])
def test_a_fair_level_is_the_brokers_own_priority(driver: str, priorities: list[int]) -> None:
    """Redis serves its lowest priority number first, RabbitMQ its highest: level 0 is first on both."""
    fair = FairQueues({}, lambda: _Store(FakeClock()), None)
    assert [fair.message_priority(_App(driver), level) for level in range(4)] == priorities
