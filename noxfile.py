"""The versions pyproject.toml admits, tested: the newest (what ``make test`` runs) and the
oldest of celery, kombu, redis-py, sentry-sdk and psutil. ``make versions`` runs both."""

from __future__ import annotations

import nox

nox.options.sessions = ["newest"]
nox.options.default_venv_backend = "venv"

# The lower bounds of pyproject.toml's dependencies, as tested.
OLDEST = ["celery==5.5.0", "kombu[redis]==5.5.4", "redis==5.0.1", "sentry-sdk==2.0.0", "psutil==5.9.0"]


@nox.session
def newest(session: nox.Session) -> None:
    """The whole suite on the newest releases the bounds admit."""
    session.install("-e", ".[dev]", "-e", "./harness")
    session.run("pytest", *session.posargs)


@nox.session
def oldest(session: nox.Session) -> None:
    """The suite (but the fresh-install check, which takes the newest) on the oldest releases."""
    session.install("-e", ".[dev]", "-e", "./harness", *OLDEST)
    session.run("pytest", "--ignore=tests/install", *session.posargs)
