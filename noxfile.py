"""The releases pyproject.toml's bounds admit, tested apart from the lock that ``make test``
installs: the newest of everything, and the oldest of celery, kombu, redis-py, sentry-sdk
and psutil. ``make versions`` runs both and each says which releases it used, so that a new
release is news here before it is a user's problem, and never a red main."""

from __future__ import annotations

import nox

nox.options.sessions = ["oldest", "newest"]
nox.options.default_venv_backend = "uv"

PYPROJECT = nox.project.load_toml("pyproject.toml")
DEV = nox.project.dependency_groups(PYPROJECT, "dev")
# The lower bounds of pyproject.toml's dependencies, as tested.
OLDEST = ["celery==5.5.0", "kombu[redis]==5.5.4", "redis==5.0.1", "sentry-sdk==2.0.0", "psutil==5.9.0"]
REPORTED = ["celery", "kombu", "redis", "sentry-sdk", "psutil", "pytest"]


def _say_releases(session: nox.Session) -> None:
    script = (
        "import sys, importlib.metadata as m\n"
        f"names = {REPORTED!r}\n"
        "print('releases: python', sys.version.split()[0], *(f'{n} {m.version(n)}' for n in names))"
    )
    session.run("python", "-c", script)


@nox.session
def newest(session: nox.Session) -> None:
    """The whole suite on the newest releases the bounds admit, the fresh install unlocked."""
    session.install("--resolution", "highest", "-e", ".", "-e", "./harness", *DEV)
    _say_releases(session)
    session.run("pytest", *session.posargs, env={"RESILIENCE_INSTALL_UNLOCKED": "1"})


@nox.session
def oldest(session: nox.Session) -> None:
    """The suite (but the fresh-install check, which takes the newest) on the oldest releases."""
    session.install("-e", ".", "-e", "./harness", *DEV, *OLDEST)
    _say_releases(session)
    session.run("pytest", "--ignore=tests/install", *session.posargs)
