"""What the harness's tests need: the local Redis for the run with real workers."""

from __future__ import annotations

import os

import pytest
import redis

REDIS_URL = os.environ.get("RESILIENCE_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def redis_available() -> None:
    try:
        redis.Redis.from_url(f"{REDIS_URL}/11", socket_connect_timeout=1).ping()
    except redis.ConnectionError as error:  # pragma: no cover - depends on the machine
        pytest.fail(f"the harness's tests need a Redis server at {REDIS_URL}: {error}")
