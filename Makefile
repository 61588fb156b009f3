# Two commands do everything: `make demo` (the main job: the reference's incidents replayed
# before and after, embedded, nothing else needed) and `make test` (lint, types, tests
# against a local Redis and RabbitMQ, started if none answers). Both install from uv.lock,
# with uv itself pinned by hash in requirements/uv.txt: the same releases on any machine,
# any day. `make lock` refreshes the lock; `make versions` tries the bounds' oldest and
# newest releases apart.
PYTHON ?= python3
VENV ?= .venv
DEMO_VENV ?= .venv-demo
TOOLS := .tools
UV := $(TOOLS)/bin/uv
CHECKED := celery_resilience harness tests benchmarks examples noxfile.py

# The machine's Python, never one uv would download.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test lint bench performance versions lock dev clean

$(UV): requirements/uv.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -qq --disable-pip-version-check --require-hashes -r requirements/uv.txt
	touch $(UV)

# The library and the harness with their locked requirements, and nothing else.
demo: $(UV)
	UV_PROJECT_ENVIRONMENT=$(DEMO_VENV) $(UV) sync --frozen --quiet --no-dev --package celery-resilience-harness
	$(DEMO_VENV)/bin/celery-resilience simulate all

# The library, the harness, every extra's packages and the tools, as locked.
dev: $(UV)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet --all-packages

lint: dev
	$(VENV)/bin/ruff check $(CHECKED)
	$(VENV)/bin/ruff format --check $(CHECKED)
	$(VENV)/bin/mypy
	$(VENV)/bin/python scripts/check-test-docstrings

test: lint
	scripts/ensure-services
	$(VENV)/bin/pytest

versions: dev
	scripts/ensure-services
	$(VENV)/bin/nox -s oldest newest

lock: $(UV)
	scripts/lock $(UV)

# Every benchmark, each keeping what it printed in benchmarks/results/ (scripts/bench).
bench: dev
	scripts/ensure-services
	PYTHON=$(VENV)/bin/python scripts/bench

# The figures in README.md and docs/ rendered from benchmarks/results/ (never typed).
performance: dev
	$(VENV)/bin/python scripts/render-performance

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(TOOLS) .nox .mypy_cache .ruff_cache .pytest_cache *.egg-info
