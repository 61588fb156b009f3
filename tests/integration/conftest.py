"""Real Celery worker processes for the integration tests."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def integration_env(redis_available: None) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "RESILIENCE_TEST_PREFIX": f"crtest-int-{run}",
        "RESILIENCE_TEST_QUEUE": f"crtest-int-{run}",
        "RESILIENCE_TEST_AI_QUEUE": f"crtest-ai-{run}",
        "PYTHONPATH": str(ROOT),
    }
    for name in ("RESILIENCE_TEST_PREFIX", "RESILIENCE_TEST_QUEUE", "RESILIENCE_TEST_AI_QUEUE"):
        os.environ[name] = env[name]
    yield env
    client = redis.Redis.from_url(env.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379") + "/13")
    for key in client.scan_iter(match=f"{env['RESILIENCE_TEST_PREFIX']}:*"):
        client.delete(key)
    broker = redis.Redis.from_url(env.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379") + "/11")
    for pattern in (f"{env['RESILIENCE_TEST_QUEUE']}*", f"{env['RESILIENCE_TEST_AI_QUEUE']}*"):
        for key in broker.scan_iter(match=pattern):
            broker.delete(key)


def status_report(env: dict[str, str], module: str) -> dict[str, Any]:
    """``celery -A <module> resilience status --json`` as an operator runs it, parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", module, "resilience", "status", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds, failing the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def start_worker(
    env: dict[str, str],
    module: str,
    queue: str,
    pool: str = "threads",
    concurrency: int = 1,
    extra: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """A real ``celery worker`` process in its own session (so a test can kill its group)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            module,
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "warning",
            *(extra or []),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def noisy_and_quiet(count: int, per_second: float, quiet_every: int = 11) -> Iterator[tuple[int, str]]:
    """``count`` publishes paced at ``per_second`` by the clock, inside the caller context
    of their tenant: one in ``quiet_every`` the quiet tenant's, the rest the noisy one's."""
    from celery_resilience import caller

    start = time.monotonic()
    for index in range(count):
        wait = start + index / per_second - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        tenant = "quiet" if index % quiet_every == 0 else "noisy"
        with caller(user_id=f"{tenant}-user", tenant=tenant):
            yield index, tenant


@contextlib.contextmanager
def app_with_worker(
    integration_env: dict[str, str], module: str, queue: str, prefix: str, concurrency: int = 1
) -> Iterator[tuple[ModuleType, dict[str, str]]]:
    """A test app module whose queue and key prefix (the environment variables ``queue`` and
    ``prefix`` it reads at import) are this run's own, with a real worker on that queue,
    up once its ``ping`` task answers; its store purged after."""
    from celery_resilience import Resilience

    name = f"crtest-{module.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}"
    names = {queue: name, prefix: name}
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in names.items():
            patch.setenv(variable, value)
        env = {**integration_env, **names}
        app = importlib.import_module(module)
        proc = start_worker(env, module, name, concurrency=concurrency)
        try:
            assert app.ping.delay().get(timeout=60) == "pong"  # up: nothing waits for its start
            yield app, env
        finally:
            stop_worker(proc)
            Resilience.of(app.app).store.purge()


@pytest.fixture(scope="session")
def worker(integration_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """One worker process, one thread: tests can occupy it to hold tasks in the queue."""
    from tests.integration import workerapp

    proc = start_worker(
        integration_env, "tests.integration.workerapp", integration_env["RESILIENCE_TEST_QUEUE"]
    )
    try:
        assert workerapp.ping.delay().get(timeout=60) == "pong"
        yield proc
    finally:
        stop_worker(proc)


@pytest.fixture(scope="session")
def ai_worker(integration_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A prefork worker with four processes for the AI tasks."""
    from tests.integration import aiapp

    proc = start_worker(
        integration_env, "tests.integration.aiapp", aiapp.QUEUE, pool="prefork", concurrency=4
    )
    try:
        assert aiapp.ping.delay().get(timeout=60) == "pong"
        yield proc
    finally:
        stop_worker(proc)
