"""A benchmark's real Celery worker: one process of threads on one queue, its app module
importable from ``benchmarks/`` (shared by the benchmarks that start their own)."""

from __future__ import annotations

import os
import subprocess
import sys

from stamp import ROOT


def thread_worker(
    app: str, queue: str, name: str, threads: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``celery -A <app> worker`` on ``queue`` with ``threads`` threads, in a session of its
    own (killed with its group), ``env`` added to this process's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "-P", "threads", "-c", str(threads),
         "-Q", queue, "-n", f"{name}-{os.getpid()}@%h", "--without-mingle", "--without-gossip",
         "--without-heartbeat", "-l", "error"],
        cwd=ROOT / "benchmarks",
        env={**os.environ, **env, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}"},
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
