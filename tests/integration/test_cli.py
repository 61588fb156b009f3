"""The operator command, run as operators run it: `celery -A app resilience ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from celery_resilience import BreakerState, Resilience
from tests.http_server import ScriptedServer
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def celery(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.integration.aiapp", "resilience", *args],
        cwd=ROOT,
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def ai(ai_worker: Any) -> ModuleType:
    from tests.integration import aiapp

    Resilience.of(aiapp.app).breakers.force("ops", BreakerState.CLOSED)
    return aiapp


def test_status_shows_a_breaker_opened_by_real_failures(
    ai: ModuleType, server: ScriptedServer, integration_env: dict[str, str]
) -> None:
    """Two real 500s trip a breaker, and status --json shows it with its weight and open time."""
    server.respond(500, {"error": "boom"})
    for _ in range(2):
        with pytest.raises(Exception, match="500"):
            ai.call_ops.delay(f"{server.url}/x").get(timeout=30)
    result = celery("status", "--json", env={**os.environ, **integration_env})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    ops = report["breakers"]["ops"]
    assert ops["state"] == "open" and ops["trips"] == 1 and 0 < ops["open_for"] <= 30 * 1.1
    assert report["tiers"]["probe"]["rate"] == "60/s"
    assert set(report["factors"]) >= {"resources", "queue", "external_apis", "predicted", "product"}
    assert {"breakers", "queues", "tiers"} <= set(report)


def test_open_close_and_reset_act_on_the_shared_breaker(
    ai: ModuleType, integration_env: dict[str, str]
) -> None:
    """The command changes the breaker every worker shares; an unknown name is a clear error."""
    env = {**os.environ, **integration_env}
    breakers = Resilience.of(ai.app).breakers
    opened = celery("open", "ops", env=env)
    assert opened.returncode == 0 and "forced_open" in opened.stdout
    assert breakers.read("ops").state is BreakerState.FORCED_OPEN
    assert celery("close", "ops", env=env).returncode == 0
    assert breakers.read("ops").state is BreakerState.CLOSED
    assert celery("reset", "ops", env=env).returncode == 0
    unknown = celery("open", "nope", env=env)
    assert unknown.returncode == 2 and "no breaker named 'nope'" in unknown.stderr and "ops" in unknown.stderr
    human = celery("status", env=env)
    assert human.returncode == 0 and "breakers" in human.stdout and "ops" in human.stdout
