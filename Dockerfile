# One image for every service of docker-compose.yml: the library, the scenario harness
# (with its example pipeline) and the examples, installed once at build time.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY celery_resilience ./celery_resilience
COPY harness ./harness
COPY examples ./examples
RUN pip install --no-cache-dir . ./harness
