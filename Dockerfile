# One image for every service of docker-compose.yml: the library, the scenario harness
# (with its example pipeline) and the examples, installed once at build time from uv.lock,
# the releases `make demo` and the tests run with.
FROM python:3.11-slim
WORKDIR /app
COPY requirements/uv.txt requirements/uv.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/uv.txt
COPY pyproject.toml uv.lock README.md ./
COPY celery_resilience ./celery_resilience
COPY harness ./harness
COPY examples ./examples
ENV UV_PROJECT_ENVIRONMENT=/usr/local UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1
RUN uv sync --frozen --no-dev --no-editable --package celery-resilience-harness
