"""``pip install celery-resilience`` (the built wheel, no extras) into a fresh virtualenv runs
the README's quick start: a real worker on the Redis broker and one on RabbitMQ, each
answering one admitted task, and the operator command.

pip resolves the wheel's requirements as a user's install does, held to the releases in
``uv.lock`` so that the suite's verdict does not move with the day; ``make versions`` runs
it on the newest releases the bounds admit (``RESILIENCE_INSTALL_UNLOCKED=1``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL

pytestmark = [pytest.mark.integration, pytest.mark.install]

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_URL = os.environ.get("RESILIENCE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding the wheel built from this checkout and what it requires, nothing else."""
    built = tmp_path_factory.mktemp("wheel")
    home = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    pip = [str(home / "bin" / "python"), "-m", "pip"]
    build = [*pip, "wheel", "--quiet", "--no-deps", "-w", str(built), str(ROOT)]
    subprocess.run(build, check=True, timeout=600)
    wheel = next(built.glob("celery_resilience-*.whl"))
    held: list[str] = []
    if os.environ.get("RESILIENCE_INSTALL_UNLOCKED") != "1":
        held = ["--constraint", str(locked_requirements(tmp_path_factory.mktemp("lock")))]
    subprocess.run([*pip, "install", "--quiet", str(wheel), *held], check=True, timeout=900)
    return home


def locked_requirements(where: Path) -> Path:
    """The releases uv.lock holds for the library's own requirements, as pip constraints."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed: the suite runs in the environment `make test` syncs from uv.lock")
    out = where / "constraints.txt"
    subprocess.run(
        [uv, "export", "--frozen", "--quiet", "--package", "celery-resilience", "--no-dev",
         "--no-emit-project", "--no-hashes", "--no-header", "--output-file", str(out)],
        cwd=ROOT, check=True, timeout=120, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project directory: the quick start, and nothing of this repository."""
    where = tmp_path_factory.mktemp("project")
    shutil.copy(Path(__file__).with_name("quickapp.py"), where / "quickapp.py")
    return where


def environment(broker: str, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {
        **env,
        "QUICKAPP_BROKER": broker,
        "QUICKAPP_BACKEND": f"{REDIS_URL}/12",
        "QUICKAPP_STORE": f"{REDIS_URL}/13",
        "QUICKAPP_QUEUE": queue,
    }


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    queue = f"crtest-install-{request.param}-{uuid.uuid4().hex[:8]}"
    yield (f"{REDIS_URL}/11" if request.param == "redis" else RABBITMQ_URL), queue
    store = redis.Redis.from_url(f"{REDIS_URL}/13")
    for key in store.scan_iter(match=f"{queue}:*"):
        store.delete(key)


def test_a_plain_install_runs_a_worker_and_admits_a_task(
    venv: Path, project: Path, broker: tuple[str, str]
) -> None:
    """A plain install starts a worker, admits a task for its caller and runs the status command."""
    url, queue = broker
    env = environment(url, queue)
    bin_dir = venv / "bin"
    worker = subprocess.Popen(
        [str(bin_dir / "celery"), "-A", "quickapp", "worker", "-P", "solo", "-Q", queue, "-l", "warning",
         "--without-mingle", "--without-gossip"],
        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        sent = subprocess.run(
            [str(bin_dir / "python"), "-c",
             "import json, quickapp\n"
             "from celery_resilience import caller\n"
             "with caller(user_id='u1', tier='free'):\n"
             "    result = quickapp.ask.delay('hi')\n"
             "print(json.dumps(result.get(timeout=60)))"],
            cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        answer = json.loads(sent.stdout)
        assert answer["context"] == {
            "user_id": "u1",
            "tier": "free",
            "request_type": "interactive",
            "decision": "allow",
        }
        status = subprocess.run(
            [str(bin_dir / "celery"), "-A", "quickapp", "resilience", "status", "--json"],
            cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["tiers"]["free"]["rate"] == "60/m"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
