# Two commands do everything: `make demo` (the main job: the reference's incidents replayed
# before and after, embedded, nothing else needed) and `make test` (lint, types, tests
# against a local Redis and RabbitMQ, started if none answers).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3
CHECKED := celery_resilience harness tests benchmarks examples noxfile.py

.PHONY: demo test lint bench versions clean

$(STAMP): pyproject.toml harness/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]" -e ./harness
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/celery-resilience simulate all

lint: $(STAMP)
	$(VENV)/bin/ruff check $(CHECKED)
	$(VENV)/bin/ruff format --check $(CHECKED)
	$(VENV)/bin/mypy
	$(PY) scripts/check-test-docstrings

test: lint
	scripts/ensure-services
	$(VENV)/bin/pytest

versions: $(STAMP)
	scripts/ensure-services
	$(VENV)/bin/nox -s oldest newest

bench: $(STAMP)
	scripts/ensure-services
	$(PY) benchmarks/admission.py
	$(PY) benchmarks/breaker.py
	$(PY) benchmarks/backpressure.py
	$(PY) benchmarks/fallback.py
	$(PY) benchmarks/cache_quality.py
	$(PY) benchmarks/tokens.py
	$(PY) benchmarks/topologies.py
	$(PY) benchmarks/instructions.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
