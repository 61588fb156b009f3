"""A worker refuses to start when a fallback chain names a task no module registered."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def test_a_worker_with_a_chain_naming_an_unregistered_task_does_not_start(
    integration_env: dict[str, str],
) -> None:
    """A worker whose chain names an unregistered task exits at start-up naming the setting and step."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.integration.badchainapp", "worker", "-P", "solo",
         "-Q", "crtest-badchain", "--without-mingle", "--without-gossip", "-l", "warning"],
        cwd=ROOT, env=integration_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "resilience_fallbacks['bad.ask']" in last and "got 'bad.rule'" in last
    assert "did you mean 'bad.rules'?" in last
