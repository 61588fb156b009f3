"""``celery resilience status`` tells operators the truth when it matters: the store down, a
queue at critical depth on RabbitMQ, a breaker whose open time is up."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Queue

from celery_resilience import Resilience
from tests.integration.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration


class ProviderDown(Exception):
    status_code = 500


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.integration.opsapp", "resilience", "status", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ops(integration_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """This module's queue and key prefix, for the app imported here and the commands run."""
    run = uuid.uuid4().hex[:8]
    names = {
        "RESILIENCE_TEST_OPS_QUEUE": f"crtest-ops-{run}",
        "RESILIENCE_TEST_OPS_PREFIX": f"crtest-ops-{run}",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in names.items():
            patch.setenv(name, value)
        yield {**integration_env, **names}


def test_with_the_store_down_status_says_so_in_one_line(ops: dict[str, str]) -> None:
    """No traceback: one line naming the store (password masked), and a non-zero exit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**ops, "RESILIENCE_TEST_OPS_STORE": f"redis://:secret@127.0.0.1:{port}/0"}
    for args in ((), ("--json",)):
        done = status(env, *args)
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: the resilience store at redis://:***@127.0.0.1:{port}/0 is unreachable: "
                          + errors[0].split("is unreachable: ", 1)[1]]  # fmt: skip
        assert "Traceback" not in done.stderr and "secret" not in done.stderr


def test_a_queue_at_critical_depth_heads_the_status(ops: dict[str, str]) -> None:
    """A RabbitMQ queue at critical depth heads the status, named, with the factor that applies there."""
    from tests.integration import opsapp

    queue = ops["RESILIENCE_TEST_OPS_QUEUE"]
    with opsapp.app.connection_for_write() as connection:
        producer = connection.Producer()
        for index in range(5):
            producer.publish({"n": index}, routing_key=queue, declare=[Queue(queue)])
    try:
        report = json.loads(status(ops, "--json").stdout)
        assert report["queues"][queue]["severity"] == "critical" and report["queues"][queue]["depth"] == 5
        assert (report["severity"], report["severity_queue"]) == ("critical", queue)
        assert report["factors"]["queue"] == 0.3 and report["factors"]["product"] == pytest.approx(0.3)
        assert report["queues"][f"{queue}-quiet"]["severity"] == "normal"
        headline = status(ops).stdout.splitlines()[0]
        assert headline.startswith(f"severity critical (queue {queue})   adaptive factor 0.30")
    finally:
        with opsapp.app.connection_for_write() as connection:
            channel_of(connection).queue_delete(queue)


def test_a_breaker_whose_open_time_is_up_reads_as_half_open(ops: dict[str, str]) -> None:
    """A breaker whose open time is up reads half_open in the status, as the documentation says."""
    from tests.integration import opsapp

    resilience = Resilience.of(opsapp.app)
    for name in ("provider", "held"):
        for _ in range(2):
            with pytest.raises(ProviderDown), resilience.guard(name):
                raise ProviderDown
    open_until = resilience.breakers.read("provider").open_until
    # This process reads the server's clock through the offset its last answers carried;
    # a little past the open time, so that the status command's own reading is past it too.
    wait_for(lambda: resilience.store.now() > open_until + 0.5, timeout=15)
    breakers = json.loads(status(ops, "--json").stdout)["breakers"]
    assert breakers["provider"]["state"] == "half_open" and breakers["provider"]["open_for"] is None
    assert breakers["held"]["state"] == "open" and breakers["held"]["open_for"] > 0
    resilience.store.purge()


def channel_of(connection: Any) -> Any:
    """The connection's default channel, whose queue methods kombu's types do not declare."""
    return connection.default_channel


def test_watch_refreshes_the_status_in_place(ops: dict[str, str]) -> None:
    """``status --watch`` redraws the breakers, severity and last minute each interval."""
    done = status(ops, "--watch", "--interval", "0.1", "--count", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("every 0.1s (Ctrl-C to stop)") == 3
    assert done.stdout.count("\nbreakers\n") == 3 and done.stdout.count("last minute") == 3
