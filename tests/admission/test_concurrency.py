"""Many processes and threads on one limit never admit more than the limit allows."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from typing import Any

import pytest

from celery_resilience.admission.bucket import BucketSpec, Decision
from celery_resilience.admission.gate import Admission
from celery_resilience.admission.port import AdmitPolicy, AdmitRequest
from celery_resilience.errors import Throttled
from celery_resilience.settings import ResilienceSettings
from celery_resilience.store.keys import KeySpace
from celery_resilience.store.redis import RedisStore
from tests.conftest import store_url

PROCESSES = 4
THREADS = 25
RATE = 40.0  # tokens per second
BURST = 15
GRACE = 6
GRACE_PERIOD = 1.0
RUN_SECONDS = 1.5


LEASE_WINDOW = 0.2


def _admit_function(prefix: str, leases: bool) -> tuple[RedisStore, Any]:
    """The store and a callable returning True when one admission is granted."""
    keys = KeySpace(prefix, 4)
    store = RedisStore(store_url(), keys, timeout=2.0)
    if not leases:
        key, shard = keys.bucket("shared-user")
        spec = BucketSpec(capacity=BURST, refill=RATE, grace_limit=GRACE, grace_period=GRACE_PERIOD)
        request = AdmitRequest(key, shard, AdmitPolicy(spec, tier="free", strategy="reject_with_backoff"))
        return store, lambda: store.admit(request).decision is not Decision.THROTTLE
    settings = ResilienceSettings.from_conf(
        {
            "resilience_tiers": {
                "t": {"rate": f"{RATE:g}/s", "burst": BURST, "grace": GRACE, "grace_period": GRACE_PERIOD}
            },
            "resilience_throttle_strategies": [{"strategy": "reject_with_backoff"}],
            "resilience_lease_window": LEASE_WINDOW,
        }
    )
    admission = Admission(settings.admission, lambda: store)
    ctx = admission.context("shared-user", None, "interactive", None)

    def admit() -> bool:
        try:
            admission.decide(ctx, task_name="t")
        except Throttled:
            return False
        return True

    return store, admit


def _hammer(prefix: str, leases: bool, ready: Any, start: Any, results: Any) -> None:
    store, admit = _admit_function(prefix, leases)
    counts = {"admitted": 0, "calls": 0}
    lock = threading.Lock()
    store.now()  # connected before the clock starts
    ready.put(True)
    start.wait()
    deadline = time.monotonic() + RUN_SECONDS

    def worker() -> None:
        admitted = calls = 0
        while time.monotonic() < deadline:
            calls += 1
            admitted += admit()
        with lock:
            counts["admitted"] += admitted
            counts["calls"] += calls

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(counts)


@pytest.mark.parametrize("leases", [False, True], ids=["round-trip-each", "leases"])
def test_four_processes_of_25_threads_respect_rate_burst_and_grace(
    redis_available: None, prefix: str, leases: bool
) -> None:
    """Admitted never exceeds rate x elapsed + burst + grace (plus one lease window) on the Redis clock."""
    ctx = multiprocessing.get_context("spawn")
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_hammer, args=(prefix, leases, ready, start, results)) for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    store = RedisStore(store_url(), KeySpace(prefix, 4))
    try:
        for _ in procs:
            ready.get(timeout=60)
        begin = store.now()
        start.set()
        counts = [results.get(timeout=60) for _ in procs]
        end = store.now()
        for proc in procs:
            proc.join(timeout=30)
        admitted = sum(c["admitted"] for c in counts)
        calls = sum(c["calls"] for c in counts)
        elapsed = end - begin
        windows = math.floor(end / GRACE_PERIOD) - math.floor(begin / GRACE_PERIOD) + 1
        bound = RATE * (elapsed + (LEASE_WINDOW if leases else 0.0)) + BURST + GRACE * windows
        print(f"leases={leases} calls={calls} admitted={admitted} bound={bound:.1f} elapsed={elapsed:.2f}")
        assert calls > 2 * bound, f"the run was not contended enough to test the bound ({calls} calls)"
        assert admitted <= bound, f"admitted {admitted} > bound {bound:.1f} over {elapsed:.2f}s"
        # And the limiter really admits up to its limit: it is not refusing everything.
        assert admitted >= RATE * RUN_SECONDS * 0.8
    finally:
        store.purge()
        store.close()
