"""The per-process breaker client: caching, batched successes, the local fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from celery_resilience.breakers.classification import Classifier
from celery_resilience.breakers.client import Breakers
from celery_resilience.breakers.machine import BreakerPolicy, BreakerState
from celery_resilience.errors import CircuitOpen, StoreUnavailable
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.testing import FakeClock
from tests.conftest import Monotonic, SplitClock

POLICY = BreakerPolicy(failure_threshold=2.0, minimum_calls=5, recovery_timeout=30, jitter=0)


def make(
    wall: FakeClock | None = None, store: MemoryStore | None = None
) -> tuple[Breakers, MemoryStore, Monotonic]:
    """Breakers over a memory store on ``wall``, with a monotonic clock of their own."""
    wall = wall or FakeClock()
    shared = store or MemoryStore(KeySpace("t", 1), clock=wall)
    mono = Monotonic(50.0)
    clock = SplitClock(wall, mono)
    return Breakers({"ai": POLICY}, lambda: shared, Classifier.default(), clock=clock), shared, mono


def succeed(breakers: Breakers, times: int) -> None:
    for _ in range(times):
        with breakers.guard("ai"):
            pass


def test_successes_are_reported_in_batches_within_the_flush_interval() -> None:
    """Four quick successes cost no round trip; the next one after 0.25 s reports all five."""
    breakers, store, mono = make()
    succeed(breakers, 4)
    assert store.breaker_read("ai", POLICY).calls == 0
    mono.now += 0.3
    succeed(breakers, 1)
    assert store.breaker_read("ai", POLICY).calls == 5


def test_a_failure_carries_the_pending_successes_and_minimum_calls_sees_them() -> None:
    """Four successes then one timeout: five calls, weight 2.0, the breaker trips at once."""
    breakers, store, _ = make()
    succeed(breakers, 4)
    with pytest.raises(TimeoutError), breakers.guard("ai"):
        raise TimeoutError
    view = store.breaker_read("ai", POLICY)
    assert view.state is BreakerState.OPEN


def test_flush_reports_what_is_pending() -> None:
    """At exit (or on demand) nothing counted locally is lost."""
    breakers, store, _ = make()
    succeed(breakers, 3)
    breakers.flush()
    assert store.breaker_read("ai", POLICY).calls == 3


def test_open_is_refused_locally_after_the_first_answer() -> None:
    """Once the store said OPEN, the process refuses until the deadline with no round trip."""
    breakers, store, _ = make()
    store.breaker_force("ai", POLICY, BreakerState.FORCED_OPEN)
    breakers._cache.clear()
    for _ in range(3):
        with pytest.raises(CircuitOpen):
            breakers.acquire("ai")
    assert breakers.stats["refused_locally"] == 2


class FailingStore(MemoryStore):
    def breaker_acquire(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("down")

    def breaker_record(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("down")


def test_store_down_falls_back_to_a_local_breaker_and_rejoins(caplog: pytest.LogCaptureFixture) -> None:
    """With the store gone a local breaker still trips, and the shared one is asked again later."""
    down = FailingStore(KeySpace("t", 1), clock=FakeClock())
    breakers, _, mono = make(store=down)
    with caplog.at_level(logging.WARNING, "celery_resilience"):
        for _ in range(5):
            with pytest.raises(TimeoutError), breakers.guard("ai"):
                raise TimeoutError
    assert breakers.stats["store_unavailable"] >= 1
    assert any("own state" in r.message for r in caplog.records)
    with pytest.raises(CircuitOpen):
        breakers.acquire("ai")  # the local breaker tripped
    healthy = MemoryStore(KeySpace("t", 1), clock=FakeClock())
    breakers._store = lambda: healthy
    mono.now += 2.1
    assert breakers.acquire("ai").store is healthy


def test_a_call_overrunning_call_timeout_counts_as_a_timeout_in_any_pool() -> None:
    """Without a soft time limit (threads, solo), a successful call that overran still weighs 2.0."""
    slow_policy = BreakerPolicy(failure_threshold=4.0, minimum_calls=1, call_timeout=1.0, jitter=0)
    wall = FakeClock()
    store = MemoryStore(KeySpace("t", 1), clock=wall)
    mono = Monotonic(50.0)
    breakers = Breakers(
        {"ai": slow_policy}, lambda: store, Classifier.default(), clock=SplitClock(wall, mono)
    )
    for _ in range(2):
        call = breakers.acquire("ai")
        mono.now += 1.5
        breakers.record(call, None)
        assert call.slow
    assert store.breaker_read("ai", slow_policy).state is BreakerState.OPEN
    assert breakers.stats["slow_calls"] == 2


def test_guard_works_as_a_decorator_acquiring_per_call() -> None:
    """@breakers.guard("ai") guards each call of the function, not the decoration."""
    breakers, store, _ = make()

    @breakers.guard("ai")
    def flaky() -> None:
        raise TimeoutError

    for _ in range(5):
        with pytest.raises(TimeoutError):
            flaky()
    assert store.breaker_read("ai", POLICY).state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        flaky()


def test_a_disabled_breaker_still_classifies_what_it_does_not_record() -> None:
    """Disabling a breaker stops recording, not the caller's retries and fallbacks."""
    breakers, store, _ = make()
    store.breaker_force("ai", POLICY, BreakerState.DISABLED)
    breakers._cache.clear()
    call = breakers.acquire("ai")
    outcome = breakers.record(call, TimeoutError("slow"))
    assert outcome is not None and outcome.category.value == "timeout"
    assert store.breaker_read("ai", POLICY).calls == 0


def tripped() -> tuple[Breakers, MemoryStore, Callable[[float], None]]:
    """A breaker tripped by a timeout (open for 30 s), and a way to move both clocks."""
    clock = FakeClock()
    breakers, store, mono = make(clock)
    succeed(breakers, 4)
    with pytest.raises(TimeoutError), breakers.guard("ai"):
        raise TimeoutError

    def advance(seconds: float) -> None:
        clock.advance(seconds)
        mono.now += seconds

    return breakers, store, advance


def test_an_open_breaker_past_its_deadline_reads_as_half_open_so_the_next_call_probes_it() -> None:
    """An open breaker past its deadline reads half-open, so enqueue-time routing lets its probe through."""
    breakers, store, advance = tripped()
    assert breakers.state("ai") is BreakerState.OPEN
    advance(31)
    assert breakers.state("ai") is BreakerState.HALF_OPEN
    with breakers.guard("ai"):
        pass  # the probe
    assert store.breaker_read("ai", POLICY).state is BreakerState.CLOSED


def test_a_probe_ending_in_celery_control_flow_frees_its_slot_for_the_next_call() -> None:
    """A probe that ends in self.retry() gives its half-open slot back at once."""
    from celery.exceptions import Retry

    breakers, store, advance = tripped()
    advance(31)
    with pytest.raises(Retry), breakers.guard("ai") as probe:
        raise Retry()
    assert probe.permit.probe
    with breakers.guard("ai"):
        pass  # the next probe, admitted without waiting for the first one's lease
    assert store.breaker_read("ai", POLICY).state is BreakerState.CLOSED
