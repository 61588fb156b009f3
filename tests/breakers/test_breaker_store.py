"""One breaker suite for both stores: the Lua script and the Python machine agree."""

from __future__ import annotations

import random
import threading

import pytest

from celery_resilience.breakers.machine import (
    BreakerData,
    BreakerState,
    Denied,
    Permit,
    acquire,
    record,
)
from celery_resilience.breakers.port import BreakerOutcome
from celery_resilience.store import MemoryStore, Store
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore
from celery_resilience.testing import FakeClock
from tests.breakers.test_machine import POLICY


def trip(store: Store, name: str = "ai") -> None:
    for _ in range(3):
        permit, _ = store.breaker_acquire(name, POLICY, "x")
        assert isinstance(permit, Permit)
        store.breaker_record(name, POLICY, BreakerOutcome(permit.generation, "", 2.5))


def test_trip_open_half_open_close(store: Store, clock: FakeClock) -> None:
    """The full cycle through the store: trip, refuse, two probes, close on success."""
    trip(store)
    denied, view = store.breaker_acquire("ai", POLICY, "a")
    assert isinstance(denied, Denied) and denied.retry_after == pytest.approx(30)
    assert view.state is BreakerState.OPEN
    clock.advance(30)
    first, _ = store.breaker_acquire("ai", POLICY, "p1")
    second, _ = store.breaker_acquire("ai", POLICY, "p2")
    third, view = store.breaker_acquire("ai", POLICY, "p3")
    assert isinstance(first, Permit) and first.probe and isinstance(second, Permit) and second.probe
    assert isinstance(third, Denied) and view.state is BreakerState.HALF_OPEN
    result = store.breaker_record("ai", POLICY, BreakerOutcome(first.generation, "p1", 0.0))
    assert result.changed and result.state is BreakerState.CLOSED


def test_a_released_probe_slot_serves_the_next_call_at_once(store: Store, clock: FakeClock) -> None:
    """A probe ending without an outcome frees its slot; a release from an older generation does not."""
    trip(store)
    clock.advance(30)
    first, _ = store.breaker_acquire("ai", POLICY, "p1")
    store.breaker_acquire("ai", POLICY, "p2")
    assert isinstance(first, Permit) and first.probe
    assert isinstance(store.breaker_acquire("ai", POLICY, "p3")[0], Denied)
    store.breaker_release("ai", POLICY, first.generation - 1, "p1")
    assert isinstance(store.breaker_acquire("ai", POLICY, "p3")[0], Denied)
    store.breaker_release("ai", POLICY, first.generation, "p1")
    third, view = store.breaker_acquire("ai", POLICY, "p3")
    assert isinstance(third, Permit) and third.probe and view.state is BreakerState.HALF_OPEN


def test_read_shows_windowed_weight_and_probes(store: Store, clock: FakeClock) -> None:
    """Operators see calls and weight in the window and the probes held."""
    permit, _ = store.breaker_acquire("ai", POLICY, "x")
    assert isinstance(permit, Permit)
    store.breaker_record("ai", POLICY, BreakerOutcome(permit.generation, "", 2.0))
    store.breaker_record("ai", POLICY, BreakerOutcome(permit.generation, "", 0.0))
    view = store.breaker_read("ai", POLICY)
    assert (view.state, view.calls, view.weight) == (BreakerState.CLOSED, 2, 2.0)
    clock.advance(61)
    assert store.breaker_read("ai", POLICY).calls == 0


def test_force_and_reset(store: Store) -> None:
    """forced_open refuses with no deadline; disabled admits without recording; closed resets."""
    store.breaker_force("ai", POLICY, BreakerState.FORCED_OPEN)
    denied, _ = store.breaker_acquire("ai", POLICY, "a")
    assert isinstance(denied, Denied) and denied.retry_after is None
    store.breaker_force("ai", POLICY, BreakerState.DISABLED)
    permit, _ = store.breaker_acquire("ai", POLICY, "a")
    assert isinstance(permit, Permit) and not permit.recording
    trip(store)
    assert store.breaker_read("ai", POLICY).state is BreakerState.DISABLED
    view = store.breaker_force("ai", POLICY, BreakerState.CLOSED)
    assert view.state is BreakerState.CLOSED


def test_breakers_are_independent_and_names_are_escaped(store: Store) -> None:
    """Tripping one dependency leaves another closed."""
    trip(store, "openai")
    assert store.breaker_read("openai", POLICY).state is BreakerState.OPEN
    assert store.breaker_read("anthropic", POLICY).state is BreakerState.CLOSED


def test_transitions_are_announced(store: Store) -> None:
    """Subscribers hear every transition (from any process, for Redis)."""
    heard: list[tuple[str | None, object]] = []
    got = threading.Event()

    def listener(name: str | None, view: object) -> None:
        heard.append((name, view))
        got.set()

    store.subscribe(listener, ["ai"])
    deadline_ok = False
    for _ in range(50):  # the Redis listener subscribes asynchronously: retry the trip until heard
        store.breaker_force("ai", POLICY, BreakerState.CLOSED)
        trip(store)
        if got.wait(0.1):
            deadline_ok = True
            break
    assert deadline_ok
    names = [name for name, _ in heard]
    assert "ai" in names


def test_memory_and_redis_breakers_agree(redis_store: RedisStore, keys: KeySpace, clock: FakeClock) -> None:
    """The Lua machine and the Python machine give the same answers on a random workload."""
    memory = MemoryStore(keys, clock=clock)
    rng = random.Random(7)
    leases = [f"l{i}" for i in range(6)]
    held: dict[str, int] = {}
    for step in range(500):
        clock.advance(rng.choice([0.0, 0.5, 2.0, 11.0, 31.0]))
        if rng.random() < 0.5:
            lease = rng.choice(leases)
            expected, _ = memory.breaker_acquire("ai", POLICY, lease)
            actual, _ = redis_store.breaker_acquire("ai", POLICY, lease)
            assert type(actual) is type(expected), step
            assert actual == expected, step
            if isinstance(expected, Permit):
                held[lease] = expected.generation
        elif held and rng.random() < 0.2:
            lease = rng.choice(sorted(held))
            generation = held.pop(lease)
            memory.breaker_release("ai", POLICY, generation, lease)
            redis_store.breaker_release("ai", POLICY, generation, lease)
        elif held:
            lease = rng.choice(sorted(held))
            outcome = BreakerOutcome(
                held.pop(lease),
                lease,
                rng.choice([0.0, 0.5, 2.0, 2.5]),
                rng.choice([None, 45.0]),
                rng.random() < 0.02,
                rng.random(),
            )
            expected_r = memory.breaker_record("ai", POLICY, outcome)
            actual_r = redis_store.breaker_record("ai", POLICY, outcome)
            assert actual_r.state is expected_r.state, step
            assert (actual_r.generation, actual_r.changed, actual_r.ignored) == (
                expected_r.generation,
                expected_r.changed,
                expected_r.ignored,
            ), step
            assert actual_r.open_until == pytest.approx(expected_r.open_until), step
    assert redis_store.breaker_read("ai", POLICY) == memory.breaker_read("ai", POLICY)


def test_pure_machine_matches_the_memory_store(clock: FakeClock, keys: KeySpace) -> None:
    """MemoryStore is the pure machine under a lock, nothing more."""
    data, memory = BreakerData(), MemoryStore(keys, clock=clock)
    permit = acquire(data, POLICY, clock(), "a")
    stored, _ = memory.breaker_acquire("ai", POLICY, "a")
    assert permit == stored
    assert isinstance(permit, Permit)
    record(data, POLICY, clock(), permit.generation, "a", 2.5, None, False, 0.0)
    memory.breaker_record("ai", POLICY, BreakerOutcome(permit.generation, "a", 2.5))
    assert memory.breaker_read("ai", POLICY).weight == 2.5
