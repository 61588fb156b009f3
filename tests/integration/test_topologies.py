"""The plugin end to end on each Redis topology: a real worker, publishes, a provider failing
over HTTP, the operator command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from celery_resilience import FallbackResult, Resilience, Throttled
from celery_resilience.breakers.machine import BreakerState
from tests.conftest import TOPOLOGIES, topology_store
from tests.http_server import ScriptedServer
from tests.integration.conftest import ROOT, start_worker, stop_worker

pytestmark = pytest.mark.integration


@pytest.fixture(params=list(TOPOLOGIES))
def topology(
    request: pytest.FixtureRequest, integration_env: dict[str, str]
) -> Iterator[tuple[Celery, dict[str, str]]]:
    """A worker whose store is one of the run's topologies, and the test's app on the same store."""
    from tests.integration import topoapp

    url, options = topology_store(request, request.param)
    ca = options.get("ssl_ca_certs")
    env = {**integration_env, "RESILIENCE_TEST_STORE_URL": url}
    if ca is not None:
        env["RESILIENCE_TEST_STORE_CA"] = ca
    worker = start_worker(env, "tests.integration.topoapp", topoapp.QUEUE,
                          extra=["-n", f"topo-{uuid.uuid4().hex[:6]}@%h"])  # fmt: skip
    app = topoapp.create(url, ca)
    try:
        assert app.tasks["topo.ping"].delay().get(timeout=60) == "pong"
        yield app, env
    finally:
        stop_worker(worker)
        Resilience.of(app).store.purge()
        Resilience.of(app).store.close()


def operator(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.integration.topoapp", "resilience", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_admission_breakers_fallbacks_and_the_operator_command(
    topology: tuple[Celery, dict[str, str]], server: ScriptedServer
) -> None:
    """Publishes admitted per user, failures trip the shared breaker, the chain answers, status shows it."""
    app, env = topology
    ask: Any = app.tasks["topo.ask"]
    server.respond(200, {"answer": "from the provider"})
    assert ask.delay("is the invoice paid?", server.url).get(timeout=60) == "from the provider"

    # Admission: a limited user gets the burst, then a Throttled naming the wait.
    admitted = 0
    with pytest.raises(Throttled):
        for _ in range(10):
            ask.apply_async(("ping", server.url), user_id="limited-1")
            admitted += 1
    assert admitted == 3

    # The provider fails over HTTP: the worker trips the breaker every process shares.
    server.respond(500, {"error": "down"})
    for prompt in ("first failure", "second failure"):
        failed = ask.delay(prompt, server.url).get(timeout=60)
        assert isinstance(failed, FallbackResult) and failed.kind == "template"
    assert Resilience.of(app).breakers.read("provider").state is BreakerState.OPEN

    # Routed at enqueue: the cache answers a paraphrase without a call to the provider.
    calls = server.requests
    cached = ask.delay("Are the invoices paid?", server.url).get(timeout=60)
    assert isinstance(cached, FallbackResult) and cached.kind == "cached_similar"
    assert cached.value == "from the provider" and server.requests == calls
    assert cached.question == "is the invoice paid?"

    report = json.loads(operator(env, "status", "--json"))
    assert report["breakers"]["provider"]["state"] == "open"
    admissions = sum(report[m]["admitted"] for m in ("this_minute", "last_minute"))
    throttled = sum(report[m]["throttled"] for m in ("this_minute", "last_minute"))
    assert admissions >= 4 and throttled >= 1  # at least the first call and the burst of three
    operator(env, "close", "provider")
    assert Resilience.of(app).breakers.read("provider").state is BreakerState.CLOSED
