"""Workers publish their health; a worker under real CPU load lowers the admitted rate."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import uuid
from types import ModuleType
from typing import Any

import psutil
import pytest

from celery_resilience import Resilience, Throttled
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def ai(ai_worker: Any) -> ModuleType:
    from tests.integration import aiapp

    return aiapp


def refusal(ai: ModuleType) -> tuple[Throttled, float]:
    """A fresh user of the 60/s 'probe' tier calls twice: the refusal of the second call, and
    the time the two calls took (the bucket refilled for that long in between)."""
    admission = Resilience.of(ai.app).admission
    ctx = admission.context(uuid.uuid4().hex, "probe", "interactive", None)
    started = time.monotonic()
    admission.decide(ctx, task_name="t")
    with pytest.raises(Throttled) as caught:
        admission.decide(ctx, task_name="t")
    return caught.value, time.monotonic() - started


def next_token_wait(ai: ModuleType) -> tuple[float, float]:
    """How long after one call the next is admitted, and the time the two calls took."""
    refused, elapsed = refusal(ai)
    return refused.retry_after, elapsed


def refill_wait_at(factor: float, wait: float, elapsed: float) -> bool:
    """Whether `wait` is what a 60/s tier scaled by `factor` gives after `elapsed` seconds
    of refill: between 1/(60 * factor) - elapsed and 1/(60 * factor), with 1 ms of rounding."""
    full = 1 / (60 * factor)
    return full - elapsed - 0.001 <= wait <= full + 0.001


def test_heartbeats_reach_the_callers(ai: ModuleType) -> None:
    """The worker's heartbeat bootstep publishes CPU, memory, load and active tasks."""
    load = Resilience.of(ai.app).load
    wait_for(lambda: load.factors() is not None and load.health is not None, timeout=20)
    assert load.health is not None and load.health.workers >= 1
    snapshots = Resilience.of(ai.app).store.read_health()
    assert any(0.0 <= s.cpu <= 1.0 and 0.0 < s.memory <= 1.0 for s in snapshots)


def test_a_worker_under_cpu_load_lowers_the_admitted_rate(ai: ModuleType) -> None:
    """A worker burning its CPUs lowers the admitted rate, and the refusal says which factor did it."""
    load = Resilience.of(ai.app).load
    flag = f"{ai.PREFIX}:burn:{uuid.uuid4().hex}"
    burners = [ai.burn.delay(flag) for _ in range(4)]
    try:
        wait_for(lambda: load.factors().resources <= 0.6, timeout=30)
        # The reading refreshes every 0.2 s, so the rate is that of one of the loaded steps.
        # Under this load the two calls can be milliseconds apart, and the bucket refills in
        # between: the bound allows for that, and the quickest of a few pairs keeps it tight.
        wait, elapsed = min((next_token_wait(ai) for _ in range(5)), key=lambda pair: pair[1])
        assert any(refill_wait_at(factor, wait, elapsed) for factor in (0.6, 0.3)), (wait, elapsed)
        assert wait > 1 / 60 + 0.001, wait
        # The refusal says which factor shrank the limit, and by how much.
        refused, _ = refusal(ai)
        assert refused.factors.get("resources") in (0.6, 0.3), refused.factors
        assert f"resources x{refused.factors['resources']:.2f}" in str(refused)
        assert "rate limit 60/s (now " in str(refused)
    finally:
        ai._flags.set(flag, 1, ex=120)
        for burner in burners:
            burner.get(timeout=60)
    wait_for(lambda: refill_wait_at(1.0, *next_token_wait(ai)), timeout=30)


def test_another_job_on_the_workers_host_does_not_change_anyones_limits(ai: ModuleType) -> None:
    """Another job keeping the host busy changes no limit: heartbeats report the worker's own CPU."""
    load = Resilience.of(ai.app).load
    store = Resilience.of(ai.app).store
    flag = f"{ai.PREFIX}:burn:{uuid.uuid4().hex}"
    burn = (
        "import redis, time\n"
        f"flags = redis.Redis.from_url({ai.REDIS + '/13'!r})\n"
        "deadline = time.monotonic() + 60\n"
        f"while time.monotonic() < deadline and not flags.exists({flag!r}):\n"
        "    sum(range(200_000))\n"
    )
    # Started through a shell that exits at once: the burners belong to no worker.
    subprocess.run(
        ["sh", "-c", f"for i in 1 2; do {sys.executable} -c {shlex.quote(burn)} & done"], check=True
    )
    try:
        since = store.now()
        wait_for(lambda: sum(1 for s in store.read_health() if s.at > since + 1.0) >= 1, timeout=20)
        assert psutil.cpu_percent(interval=0.5) > 80  # the host is busy
        fresh = [s for s in store.read_health() if s.at > since + 1.0]
        assert fresh and all(s.cpu < 0.5 for s in fresh), fresh
        assert load.factors().resources == 1.0
        assert refill_wait_at(1.0, *next_token_wait(ai))
    finally:
        ai._flags.set(flag, 1, ex=120)
