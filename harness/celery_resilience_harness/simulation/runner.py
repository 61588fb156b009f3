"""Runs one scenario once: before (the plain pipeline) or after (the protected one).

Embedded (no broker given): memory transport, ``MemoryStore``, results in this process,
and a thread-pool worker inside this process. With a broker: real ``celery worker``
processes of the example app, started here with the run's configuration in their
environment. Either way the fake services are a real HTTP server, and the phases'
switches reach it over HTTP at the times the scenario says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sentry_sdk
from celery import Celery

from celery_resilience import BreakerState, Resilience, caller
from celery_resilience.monitoring.summary import MetricsReader

from .load import FINAL_STATES, LoadRun, run_load
from .results_backend import URL as IN_PROCESS_BACKEND
from .results_backend import InProcessBackend
from .scenarios import Scale, Scenario
from .services_client import ServicesClient
from .traffic import Arrival, arrivals

__all__ = ["RunOptions", "RunData", "run_scenario", "load_pipeline", "MODES"]

MODES = {"before": "plain", "after": "protected"}
TASKS = {"classify": "pipeline.classify_content", "prioritise": "pipeline.prioritise_task"}


@dataclass(frozen=True)
class RunOptions:
    scale: Scale = field(default_factory=Scale)
    broker: str | None = None  # None: embedded
    store: str | None = None
    backend: str | None = None
    pipeline: str = "celery_resilience_harness.pipeline"
    processes: int = 2
    concurrency: int = 24
    seed: int = 1
    # Workers started elsewhere (docker compose): each mode's workers consume
    # "<queue>.<mode>" with the key prefix "<queue>", configured like this run.
    external_workers: bool = False
    queue: str = "pipeline"
    # Where the workers' own logs go (each task failure's traceback among them): a file per
    # run here, so that the terminal shows the progress and the tables; None: the terminal.
    logs: Path | None = None

    @property
    def embedded(self) -> bool:
        return self.broker is None


@dataclass
class RunData:
    scenario: Scenario
    mode: str
    load: LoadRun
    remaining_in_broker: int
    services: dict[str, Any]
    samples: list[dict[str, Any]]
    marks: dict[str, float]
    plugin: dict[str, float]


def load_pipeline(package: str, mode: str) -> Any:
    """The pipeline's module for ``mode`` (the installed example, or a user's own package,
    which is looked for in the current directory as well)."""
    name = f"{package}.{MODES[mode]}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
            with contextlib.suppress(ModuleNotFoundError):
                return importlib.import_module(name)
    raise SystemExit(
        f"cannot import the pipeline {name!r}: pass --pipeline with a package that has "
        "plain.py and protected.py, importable from here"
    )


class PipelineDriver:
    """Submits requests as the pipeline's callers do and reads results from its backend."""

    def __init__(self, app: Celery, protected: bool) -> None:
        self.app = app
        self.protected = protected
        self.tasks: dict[str, Any] = {kind: app.tasks[name] for kind, name in TASKS.items()}
        self.backend: Any = app.backend

    def submit(self, arrival: Arrival) -> str:
        task = self.tasks[arrival.kind]
        if self.protected and arrival.tenant:  # as a web middleware names the tenant
            with caller(user_id=arrival.user, tenant=arrival.tenant):
                return str(task.apply_async((arrival.text,)).id)
        if self.protected:
            return str(task.apply_async((arrival.text,), user_id=arrival.user).id)
        return str(task.apply_async((arrival.text,)).id)

    def poll(self, task_ids: Sequence[str]) -> Mapping[str, tuple[str, Any]]:
        backend = self.backend
        keys = [backend.get_key_for_task(task_id) for task_id in task_ids]
        values = backend.mget(keys)
        if isinstance(values, Mapping):
            values = [values.get(key) for key in keys]
        found: dict[str, tuple[str, Any]] = {}
        for task_id, value in zip(task_ids, values, strict=True):
            if value is None:
                continue
            meta = backend.decode_result(value)
            if meta.get("status") in FINAL_STATES:
                found[task_id] = (meta["status"], meta.get("result"))
        return found


def run_scenario(
    scenario: Scenario,
    mode: str,
    options: RunOptions,
    services: ServicesClient,
    *,
    progress: Callable[[str], None] | None = None,
) -> RunData:
    scale = options.scale
    run_id = uuid.uuid4().hex[:8]
    module = load_pipeline(options.pipeline, mode)
    if options.external_workers:
        config = _pipeline_config(options, services.url, options.queue, f"{options.queue}.{mode}")
        _forget(options.store, options.queue)
    else:
        config = _pipeline_config(
            options, services.url, f"sim-{run_id}", f"sim.{scenario.name}.{mode}.{run_id}"
        )
    services.reset()
    services.control(_initial_switches(scale))
    app: Celery = module.create_app(config)
    if options.external_workers and mode == "after":
        _close_breakers(app)
    if options.embedded:
        # The memory transport sleeps a whole second whenever it finds nothing to deliver.
        app.conf.broker_transport_options = {"polling_interval": 0.01}
    driver = PipelineDriver(app, protected=mode == "after")
    schedule = arrivals(scenario, scale, seed=options.seed)
    sampler = _Sampler(app, services, protected=mode == "after")
    marks: dict[str, float] = {}
    label = f"{scenario.name} {mode}"
    total = scale.wall(scenario.minutes * 60)

    def report(now: float, requests: list[Any]) -> None:
        if progress is not None:
            progress(_progress_line(label, now, total, requests, sampler.breaker))

    log = None if options.logs is None else options.logs / f"worker-{scenario.name}-{mode}.log"
    with _workers(app, module, config, options, log) as workers:
        if progress is not None:
            progress(f"[{label}] {workers.count} worker(s) up, sending {len(schedule)} requests")
        switcher = threading.Thread(
            target=_switch_phases, args=(scenario, scale, services, marks), name="phases", daemon=True
        )
        started = time.monotonic()
        sampler.start(started)
        switcher.start()
        load = run_load(
            driver, schedule, scale.wall(scale.patience), scale.wall(scale.patience), progress=report
        )
        switcher.join(timeout=5)
        sampler.stop()
        held = workers.held()
    held |= workers.held()  # and what the worker took in while it stopped
    load.refresh(driver)
    leftover = _take_remaining(app, config.queue) | held
    remaining = sum(1 for t in leftover if t in load.task_states and load.task_states[t] is None)
    plugin = _plugin_totals(app) if mode == "after" else {}
    _settle_sentry(services)
    stats = services.stats()
    if options.embedded:
        InProcessBackend.clear()
    return RunData(scenario, mode, load, remaining, stats, sampler.samples, marks, plugin)


def _settle_sentry(services: Any, quiet: float = 0.5, deadline: float = 30.0) -> None:
    """Every event this run sent has arrived before its count is read: the SDK sends from a
    thread of its own, and events still in flight would be counted in the next run."""
    sentry_sdk.flush(timeout=deadline)
    last, until = -1, time.monotonic() + deadline
    while time.monotonic() < until:
        count = int(services.stats().get("sentry", {}).get("events", 0))
        if count == last:
            return
        last = count
        time.sleep(quiet)


def _pipeline_config(options: RunOptions, services_url: str, key_prefix: str, queue: str) -> Any:
    config_module = importlib.import_module(f"{options.pipeline}.config")
    scale = options.scale
    return config_module.PipelineConfig(
        broker_url=options.broker or "memory://localhost/",
        result_backend=options.backend or (IN_PROCESS_BACKEND if options.embedded else options.broker),
        store_url=options.store or "memory://",
        services_url=services_url,
        key_prefix=key_prefix,
        queue=queue,
        speedup=scale.speedup,
        provider_rpm=scale.provider_rpm,
        db_connections=scale.db_connections,
        sentry_dsn=None if options.embedded else ServicesClient(services_url).sentry_dsn(),
    )


def _initial_switches(scale: Scale) -> dict[str, Any]:
    minute = scale.wall(60)
    return {
        "providers": {
            "primary": {"rpm": scale.provider_rpm, "minute": minute, "outage": None, "slow": 0.0},
            "secondary": {"rpm": max(1, scale.provider_rpm // 2), "minute": minute, "outage": None},
        },
        "db": {
            "max_connections": scale.db_connections,
            "held_by_others": 0,
            "acquire_timeout": scale.wall(5),
            "query_time": 0.01,
        },
    }


def _switch_phases(
    scenario: Scenario, scale: Scale, services: ServicesClient, marks: dict[str, float]
) -> None:
    origin = time.monotonic()
    start = 0.0
    for phase in scenario.phases:
        delay = start - (time.monotonic() - origin)
        if delay > 0:
            time.sleep(delay)
        changes: dict[str, Any] = {}
        if phase.providers:
            changes["providers"] = {name: dict(s) for name, s in phase.providers.items()}
        if phase.db_held_share is not None:
            changes["db"] = {"held_by_others": round(phase.db_held_share * scale.db_connections)}
        if changes:
            services.control(changes)
        for mark in phase.marks:
            marks[mark] = time.monotonic() - origin
        start += scale.wall(phase.minutes * 60)


class _Sampler:
    """Every quarter second: the primary breaker's state and the database's pool use."""

    def __init__(self, app: Celery, services: ServicesClient, protected: bool) -> None:
        self.app = app
        self.services = services
        self.protected = protected
        self.samples: list[dict[str, Any]] = []
        self.breaker = "-"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, origin: float) -> None:
        def loop() -> None:
            while not self._stop.wait(0.25):
                sample: dict[str, Any] = {"t": round(time.monotonic() - origin, 2)}
                if self.protected:
                    self._sample_plugin(sample)
                with contextlib.suppress(OSError, ValueError):
                    sample["db_usage"] = self.services.db_usage()
                self.samples.append(sample)

        self._thread = threading.Thread(target=loop, name="sampler", daemon=True)
        self._thread.start()

    def _sample_plugin(self, sample: dict[str, Any]) -> None:
        resilience = Resilience.of(self.app)
        queue = self.app.conf.task_default_queue
        with contextlib.suppress(Exception):
            self.breaker = resilience.breakers.state("primary").value
            sample["severity"] = resilience.load.severity(queue).value
            factors = resilience.load.factors(queue, "primary")
            sample["multiplier"] = round(factors.product, 3)
            sample["factors"] = {k: round(v, 3) for k, v in dataclasses.asdict(factors).items()}
        sample["breaker"] = self.breaker

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass(frozen=True)
class _Workers:
    count: int
    held: Callable[[], frozenset[str]]


def _held_in_memory(qos: Any) -> frozenset[str]:
    """Tasks the in-process worker is running or holds unacknowledged (waiting for their
    countdown). The memory transport drops held ones when the worker stops instead of returning
    them to the queue, so they are counted here, not as lost. Its ``qos`` keeps them after
    the worker has stopped."""
    delivered = getattr(qos, "_delivered", {}) or {}
    from celery.worker import state

    held = {str(request.id) for request in list(state.active_requests)}
    for message in list(delivered.values()):
        headers = getattr(message, "headers", None) or {}
        task_id = headers.get("id") or getattr(message, "properties", {}).get("correlation_id")
        if task_id:
            held.add(str(task_id))
    return frozenset(held)


@contextlib.contextmanager
def _workers(
    app: Celery, module: Any, config: Any, options: RunOptions, log: Path | None
) -> Iterator[_Workers]:
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
    if options.embedded:
        from celery.contrib.testing.worker import start_worker

        with (
            _logging_to(log),
            start_worker(
                app,
                pool="threads",
                concurrency=options.concurrency,
                perform_ping_check=False,
                loglevel="WARNING" if log is not None else "ERROR",
                shutdown_timeout=30.0,
            ) as worker,
        ):
            consumer = getattr(worker, "consumer", None)
            channel = getattr(getattr(consumer, "task_consumer", None), "channel", None)
            qos = getattr(channel, "qos", None)
            yield _Workers(1, lambda: _held_in_memory(qos))
        return
    if options.external_workers:
        yield _Workers(_wait_for_workers(app, 1, deadline=time.monotonic() + 120), frozenset)
        return
    env = {**os.environ, **config.as_env()}
    env.setdefault("PYTHONPATH", os.getcwd())
    command = [sys.executable, "-m", "celery", "-A", module.__name__, "worker", "-P", "threads"]
    command += ["-c", str(options.concurrency), "-Q", config.queue, "-l", "WARNING"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    stderr = contextlib.ExitStack()
    sink = None if log is None else stderr.enter_context(log.open("ab"))
    processes = [
        subprocess.Popen(
            [*command, "-n", f"sim{index}-{config.key_prefix}@%h"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
        for index in range(options.processes)
    ]
    try:
        up = _wait_for_workers(app, options.processes, deadline=time.monotonic() + 60)
        yield _Workers(up, frozenset)  # a warm shutdown returns held tasks to the broker
    finally:
        for process in processes:
            process.terminate()  # warm shutdown: tasks held for later go back to the broker
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        stderr.close()


@contextlib.contextmanager
def _logging_to(log: Path | None) -> Iterator[None]:
    """This process's log records go to ``log`` alone while the embedded worker runs (the
    worker finds the root logger configured and adds no handler of its own)."""
    if log is None:
        yield
        return
    root = logging.getLogger()
    saved = list(root.handlers)
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s %(threadName)s] %(name)s %(message)s"))
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = saved
        handler.close()


def _forget(store_url: str | None, prefix: str) -> None:
    """Start a run against long-lived workers from a clean slate: the previous run's
    breakers, buckets, cache and metrics are deleted."""
    if not store_url or not store_url.startswith(("redis://", "rediss://")):
        return
    import redis

    client = redis.Redis.from_url(store_url)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def _close_breakers(app: Celery) -> None:
    """Long-lived workers may remember an open breaker from the previous run: reset each
    one, which every worker hears over the store's transition feed."""
    breakers = Resilience.of(app).breakers
    for name in breakers.policies:
        breakers.force(name, BreakerState.CLOSED)


def _wait_for_workers(app: Celery, expected: int, deadline: float) -> int:
    seen = 0
    while time.monotonic() < deadline:
        seen = len(app.control.ping(timeout=0.5) or [])
        if seen >= expected:
            return seen
    raise RuntimeError(f"only {seen} of {expected} workers answered a ping within 60 s")


def _take_remaining(app: Celery, queue: str) -> frozenset[str]:
    """The ids of the tasks still in the queue after the workers stopped (not lost, not
    done), taken off it so the next run starts empty. Ids, not messages: a retry is a
    second message for the same task."""
    from kombu import Queue

    found: set[str] = set()
    with app.connection_for_write() as connection:
        bound = Queue(queue, no_declare=True)(connection.default_channel)
        try:
            while (message := bound.get(no_ack=True)) is not None:
                headers = message.headers or {}
                task_id = headers.get("id") or message.properties.get("correlation_id")
                if task_id:
                    found.add(str(task_id))
        except Exception:  # the queue was never declared: nothing in it
            pass
    return frozenset(found)


def _plugin_totals(app: Celery) -> dict[str, float]:
    """The protected run's own counters, summed over the minutes it spanned."""
    reader = MetricsReader(Resilience.of(app).store)
    totals: dict[str, float] = {}
    for summary in reader.last(30, include_current=True):
        totals["admitted"] = totals.get("admitted", 0) + summary.admitted
        totals["graced"] = totals.get("graced", 0) + summary.graced
        for strategy, count in summary.throttled_by_strategy.items():
            totals[strategy] = totals.get(strategy, 0) + count
        for kind, count in summary.fallbacks.items():
            totals[f"fallback:{kind}"] = totals.get(f"fallback:{kind}", 0) + count
        for name, count in summary.breaker_trips.items():
            totals[f"trips:{name}"] = totals.get(f"trips:{name}", 0) + count
        totals["expired"] = totals.get("expired", 0) + summary.expired
        for subject, count in summary.handled.items():  # counted, not sent to Sentry
            totals["handled"] = totals.get("handled", 0) + count
            totals[f"handled:{subject}"] = totals.get(f"handled:{subject}", 0) + count
    return totals


def _progress_line(label: str, now: float, total: float, requests: list[Any], breaker: str) -> str:
    ended = [r for r in requests if r.outcome is not None]
    answered = sum(1 for r in ended if r.answered)
    fallback = sum(1 for r in ended if r.outcome and r.outcome.startswith("fallback:"))
    failed = sum(1 for r in ended if r.outcome in ("error", "timeout"))
    rejected = sum(1 for r in ended if r.outcome == "rejected")
    done = min(1.0, now / total) if total > 0 else 1.0
    filled = round(20 * done)
    stage = f"{min(now, total):3.0f}/{total:.0f}s" if now < total else "waiting for answers"
    return (
        f"[{label}] [{'#' * filled}{'.' * (20 - filled)}] {stage} sent {len(requests)} "
        f"answered {answered} (fallback {fallback}) rejected {rejected} failed {failed} breaker {breaker}"
    )
