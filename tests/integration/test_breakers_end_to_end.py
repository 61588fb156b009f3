"""Breakers across real worker processes, calling a local HTTP server as the provider."""

from __future__ import annotations

import os
import signal
from types import ModuleType
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from celery_resilience import BreakerState, CircuitOpen, Resilience
from celery_resilience.breakers.client import Breakers
from tests.http_server import ScriptedServer
from tests.integration.conftest import start_worker, stop_worker, wait_for

pytestmark = pytest.mark.integration

OK = {"ok": True}


@pytest.fixture
def ai(ai_worker: Any, server: ScriptedServer) -> ModuleType:
    from tests.integration import aiapp

    server.respond(200, OK)
    server.requests = 0
    server.arrivals.clear()
    server.arrived.clear()
    return aiapp


def breakers(ai: ModuleType) -> Breakers:
    return Resilience.of(ai.app).breakers


def trip(ai: ModuleType, name: str) -> None:
    """Open a breaker from the test process with real timeouts, and wait until it may probe."""
    b = breakers(ai)
    b.force(name, BreakerState.CLOSED)
    while b.read(name).state is BreakerState.CLOSED:
        call = b.acquire(name)
        b.record(call, TimeoutError("provider timed out"))
    assert b.read(name).state is BreakerState.OPEN
    store = Resilience.of(ai.app).store
    wait_for(lambda: store.now() >= b.read(name).open_until)


def outcome(result: Any) -> str:
    try:
        result.get(timeout=60)
    except CircuitOpen:
        return "refused"
    except Exception as error:
        return type(error).__name__
    return "ok"


def test_exactly_the_configured_probes_run_across_four_processes(
    ai: ModuleType, server: ScriptedServer
) -> None:
    """half_open_probes = 2: of four concurrent calls in four processes, two reach the provider."""
    trip(ai, "probes")
    server.respond(200, OK, delay=1.0)
    results = [ai.call_probes.delay(f"{server.url}/probe") for _ in range(4)]
    outcomes = sorted(outcome(r) for r in results)
    assert outcomes == ["ok", "ok", "refused", "refused"]
    assert server.requests == 2
    assert breakers(ai).read("probes").state is BreakerState.CLOSED  # success_threshold = 2


def test_a_killed_probe_holder_does_not_leave_the_breaker_stuck(
    ai: ModuleType, server: ScriptedServer, integration_env: dict[str, str]
) -> None:
    """SIGKILL a worker mid-probe: its lease lapses after probe_lease and another probe is allowed."""
    proc = start_worker(integration_env, "tests.integration.aiapp", ai.KILL_QUEUE, pool="solo")
    try:
        trip(ai, "killable")
        server.respond(200, OK, delay=30.0)
        ai.call_killable.delay(f"{server.url}/stuck")
        assert server.arrived.wait(60), "the probe never reached the provider"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop_worker(proc)
    b = breakers(ai)
    with pytest.raises(CircuitOpen):
        b.acquire("killable")  # the dead worker's lease still holds the only probe
    permits: list[Any] = []

    def probe_granted() -> bool:
        try:
            permits.append(b.acquire("killable"))
        except CircuitOpen:
            return False
        return True

    wait_for(probe_granted, timeout=15)
    assert permits[0].permit.probe
    b.record(permits[0], None)
    assert b.read("killable").state is BreakerState.CLOSED


def test_a_late_outcome_from_an_older_generation_is_ignored(ai: ModuleType, server: ScriptedServer) -> None:
    """A slow call admitted before the trip succeeds after it: the half-open breaker stays half-open."""
    b = breakers(ai)
    b.force("late", BreakerState.CLOSED)
    server.respond(200, OK, delay=3.0)
    slow = ai.call_late.delay(f"{server.url}/slow")
    assert server.arrived.wait(30)
    trip(ai, "late")
    probe = b.acquire("late")
    assert probe.permit.probe
    assert slow.get(timeout=30) == OK
    assert b.read("late").state is BreakerState.HALF_OPEN
    b.record(probe, None)
    assert b.read("late").state is BreakerState.CLOSED


def test_forced_open_refuses_and_disabled_passes_without_recording(
    ai: ModuleType, server: ScriptedServer
) -> None:
    """forced_open never calls the provider; disabled calls it every time and never trips."""
    b = breakers(ai)
    b.force("ops", BreakerState.FORCED_OPEN)
    with pytest.raises(CircuitOpen, match="forced_open"):
        ai.call_ops.delay(f"{server.url}/x").get(timeout=30)
    assert server.requests == 0
    b.force("ops", BreakerState.DISABLED)
    server.respond(500, {"error": "down"})
    # The transition reaches the workers through pub/sub: retry until it has.
    wait_for(lambda: outcome(ai.call_ops.delay(f"{server.url}/x")) != "refused")
    calls_before = server.requests
    outcomes = [outcome(ai.call_ops.delay(f"{server.url}/x")) for _ in range(6)]
    assert all(o not in ("ok", "refused") for o in outcomes), outcomes  # the provider's 500, every time
    assert server.requests == calls_before + 6
    assert b.read("ops").state is BreakerState.DISABLED
    b.force("ops", BreakerState.CLOSED)


def test_a_call_overrunning_call_timeout_counts_as_a_timeout(ai: ModuleType, server: ScriptedServer) -> None:
    """call_timeout becomes the soft time limit; two overruns weigh 2 x 2.0 and trip the breaker."""
    b = breakers(ai)
    b.force("slow", BreakerState.CLOSED)
    server.respond(200, OK, delay=2.0)
    for _ in range(2):
        with pytest.raises(SoftTimeLimitExceeded):
            ai.call_slow.delay(f"{server.url}/slow").get(timeout=30)
    assert b.read("slow").state is BreakerState.OPEN
    b.force("slow", BreakerState.CLOSED)


def test_the_quota_guard_keeps_calls_under_the_budget_across_processes(
    ai: ModuleType, server: ScriptedServer
) -> None:
    """Four processes keep 40 calls under a 10/s budget, and waiting for the budget is not a retry."""
    results = [ai.call_quota.delay(f"{server.url}/q") for _ in range(40)]
    assert [r.get(timeout=120) for r in results] == [{"answer": OK, "retries": 0}] * 40
    arrivals = sorted(server.arrivals)
    assert len(arrivals) == 40
    start = arrivals[0]
    for index, moment in enumerate(arrivals):
        # A full bucket of 10, then 10 per second (+1 rounding). Arrivals are timed at the
        # server: the first call's trip there may take longer than a later one's (50 ms).
        allowed = 10 + 10 * (moment - start + 0.05) + 1
        assert index + 1 <= allowed, f"call {index + 1} arrived {moment - start:.2f}s in: over budget"
    assert arrivals[-1] - start >= 2.5  # 30 calls beyond the bucket need 3 s at 10/s


def test_a_provider_counting_in_a_sliding_window_never_sees_more_than_the_budget(ai: ModuleType) -> None:
    """50 calls under a 20-per-3 s budget reach a sliding-window provider without one 429."""
    provider = ScriptedServer()
    provider.respond(200, {"answer": "ok"})
    provider.limit(20, 3.0)
    try:
        results = [ai.call_windowed.delay(f"{provider.url}/v1/chat/completions") for _ in range(50)]
        assert [r.get(timeout=120) for r in results] == [200] * 50
        assert provider.requests == 50
    finally:
        provider.close()
