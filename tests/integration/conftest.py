"""Real Celery worker processes for the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

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
        "PYTHONPATH": str(ROOT),
    }
    os.environ["RESILIENCE_TEST_PREFIX"] = env["RESILIENCE_TEST_PREFIX"]
    os.environ["RESILIENCE_TEST_QUEUE"] = env["RESILIENCE_TEST_QUEUE"]
    yield env
    client = redis.Redis.from_url(env.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379") + "/13")
    for key in client.scan_iter(match=f"{env['RESILIENCE_TEST_PREFIX']}:*"):
        client.delete(key)
    broker = redis.Redis.from_url(env.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379") + "/11")
    for key in broker.scan_iter(match=f"{env['RESILIENCE_TEST_QUEUE']}*"):
        broker.delete(key)


@pytest.fixture(scope="session")
def worker(integration_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """One worker process, one thread: tests can occupy it to hold tasks in the queue."""
    from tests.integration import workerapp

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.workerapp",
            "worker",
            "-P",
            "threads",
            "-c",
            "1",
            "-Q",
            integration_env["RESILIENCE_TEST_QUEUE"],
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=integration_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert workerapp.ping.delay().get(timeout=60) == "pong"
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
