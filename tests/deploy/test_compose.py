"""The docker compose stack a user brings up: a valid file, one image, health-ordered start,
no clash with local servers, and commands that exist in the image."""

from __future__ import annotations

import importlib.util
import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import compose_spec
import yaml
from celery_resilience_harness.__main__ import USAGE

ROOT = Path(__file__).resolve().parents[2]


def services() -> dict[str, Any]:
    """The compose file's services, YAML anchors and merge keys resolved as compose does."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(loaded["services"])


def test_the_file_is_valid_under_the_compose_specification() -> None:
    """The Compose specification's own parser accepts the file (an unknown key or value would fail)."""
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    spec = {key: value for key, value in loaded.items() if not key.startswith("x-")}
    parsed = compose_spec.PyCompose.from_json(json.dumps(spec))
    assert set(parsed.service_names()) == set(services())


def test_services_start_in_health_order_on_one_image_and_publish_no_host_ports() -> None:
    """Services wait for healthy Redis, share one built image, publish no host port, and are all used."""
    found = services()
    assert "healthcheck" in found["redis"] and "healthcheck" in found["fake-services"]
    needed = {"simulation"}
    for name, service in found.items():
        assert "ports" not in service, name
        if name != "redis":
            assert service["build"] == "." and service["image"] == "celery-resilience:local", name
        depends = service.get("depends_on", {})
        for target, condition in depends.items():
            needed.add(target)
            if target in ("redis", "fake-services"):
                assert condition == {"condition": "service_healthy"}, (name, target)
        if service.get("profiles"):
            needed.add(name)
    assert set(found) == needed


def test_every_command_exists_in_the_image() -> None:
    """Each service's command is an entry point or module of what the Dockerfile installs."""
    copied = (ROOT / "Dockerfile").read_text()
    scripts = {point.name for point in entry_points(group="console_scripts")}
    for name, service in services().items():
        if name == "redis":
            continue
        command = service["command"]
        if command[0] == "celery-resilience":
            assert "celery-resilience" in scripts and f"  {command[1]} " in USAGE, name
            module = "celery_resilience_harness"
        elif command[0] == "celery":
            module = command[command.index("-A") + 1]
        else:
            assert command[:2] == ["python", "-m"], name
            module = command[2]
        assert importlib.util.find_spec(module) is not None, (name, module)
        top = module.split(".")[0]
        source = "harness" if top == "celery_resilience_harness" else top
        assert f"COPY {source} ./{source}" in copied, (name, source)
