"""Replays arrivals against a pipeline and accounts for every request and every task.

Two views, both counted:
- the **user's**: each request ends answered (by the primary, or by a fallback of some
  kind), rejected (``Throttled``, and the wait it named would outlast the user's
  patience), failed (the task raised), or timed out (no answer within patience).
  A throttled user comes back after ``retry_after`` if patience allows.
- the **task's**: every published task ends with a final state in the result backend,
  or is still in the broker when the run stops; anything else is lost.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from celery_resilience import FallbackResult, Throttled

from .traffic import Arrival

__all__ = ["Driver", "Request", "LoadRun", "run_load"]

FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class Driver(Protocol):
    def submit(self, arrival: Arrival) -> str:
        """Publish the request's task; its id. May raise ``Throttled``."""

    def poll(self, task_ids: Sequence[str]) -> Mapping[str, tuple[str, Any]]:
        """Final states (and results) of the tasks that have one."""


@dataclass
class Request:
    arrival: Arrival
    deadline: float
    task_ids: list[str] = field(default_factory=list)
    throttles: int = 0
    outcome: str | None = None  # primary | fallback:<kind> | rejected | error | timeout
    detail: str = ""
    ended_at: float | None = None
    answer: str | None = None  # the label or priority the user got, whoever answered

    @property
    def latency(self) -> float | None:
        if self.ended_at is None or not self.answered:
            return None
        return self.ended_at - self.arrival.at

    @property
    def answered(self) -> bool:
        return self.outcome is not None and (
            self.outcome == "primary" or self.outcome.startswith("fallback:")
        )


@dataclass
class LoadRun:
    requests: list[Request]
    task_states: dict[str, str | None]  # task id -> final state, None while unknown
    submit_errors: Counter[str]
    duration: float

    @property
    def tasks_published(self) -> int:
        return len(self.task_states)

    def refresh(self, driver: Driver) -> None:
        """Read the final states of tasks that finished while the workers shut down."""
        unknown = [task_id for task_id, state in self.task_states.items() if state is None]
        for start in range(0, len(unknown), 500):
            for task_id, (state, _) in driver.poll(unknown[start : start + 500]).items():
                self.task_states[task_id] = state

    def tasks_final(self) -> int:
        return sum(1 for state in self.task_states.values() if state is not None)


def outcome_of(state: str, result: Any) -> tuple[str, str]:
    if state == "SUCCESS":
        if isinstance(result, FallbackResult):
            return f"fallback:{result.kind}", str(result.source)
        if isinstance(result, Mapping) and result.get("provider") not in (None, "primary"):
            return f"fallback:{result.get('provider')}", ""
        return "primary", ""
    if state == "REVOKED":
        return "error", "expired in the queue"
    return "error", f"{type(result).__name__}: {result}"[:200]


def answer_of(result: Any) -> str | None:
    """The label or priority in a pipeline's result, from a provider or a fallback."""
    value = result.value if isinstance(result, FallbackResult) else result
    if isinstance(value, str):  # a template's answer
        return value
    if isinstance(value, Mapping):
        found = value.get("label", value.get("priority"))
        return None if found is None else str(found)
    return None


class _Collector:
    """Polls the result backend for every task still open and ends requests."""

    def __init__(
        self, driver: Driver, clock: Callable[[], float], patience: float, interval: float = 0.05
    ) -> None:
        self.driver = driver
        self.patience = patience
        self.clock = clock
        self.interval = interval
        self.lock = threading.Lock()
        self.open: dict[str, Request] = {}  # task id -> its request
        self.requests: list[Request] = []
        self.task_states: dict[str, str | None] = {}

    def track(self, request: Request, task_id: str) -> None:
        with self.lock:
            self.open[task_id] = request
            self.task_states[task_id] = None

    def sweep(self) -> None:
        with self.lock:
            ids = list(self.open)
        now = self.clock()
        for start in range(0, len(ids), 500):
            finished = self.driver.poll(ids[start : start + 500])
            with self.lock:
                for task_id, (state, result) in finished.items():
                    request = self.open.pop(task_id, None)
                    self.task_states[task_id] = state
                    if request is not None and request.outcome is None and task_id == request.task_ids[-1]:
                        request.outcome, request.detail = outcome_of(state, result)
                        request.answer = answer_of(result) if state == "SUCCESS" else None
                        request.ended_at = now
        with self.lock:
            for request in self.requests:
                if request.outcome is None and now >= request.deadline:
                    request.outcome, request.ended_at = "timeout", request.deadline

    def pending_requests(self) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.outcome is None)

    def open_tasks(self) -> int:
        with self.lock:
            return len(self.open)


def run_load(
    driver: Driver,
    schedule: Sequence[Arrival],
    patience: float,
    drain: float,
    *,
    progress: Callable[[float, list[Request]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LoadRun:
    """Send ``schedule`` in real time; wait for answers, then up to ``drain`` seconds more
    for tasks still running. Times in the result are seconds after the start."""
    origin = clock()

    def now() -> float:
        return clock() - origin

    collector = _Collector(driver, now, patience)
    submit_errors: Counter[str] = Counter()
    stop = threading.Event()

    def collect() -> None:
        while not stop.is_set():
            collector.sweep()
            stop.wait(collector.interval)

    thread = threading.Thread(target=collect, name="simulation-collector", daemon=True)
    thread.start()
    try:
        _send_all(driver, collector, schedule, now, progress, submit_errors)
        end_of_traffic = now()
        while collector.pending_requests() and now() < end_of_traffic + patience + 1.0:
            _report(progress, now, collector)
            time.sleep(0.1)
        drain_until = now() + drain
        while collector.open_tasks() and now() < drain_until:
            _report(progress, now, collector)
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
    collector.sweep()
    return LoadRun(collector.requests, collector.task_states, submit_errors, now())


def _send_all(
    driver: Driver,
    collector: _Collector,
    schedule: Sequence[Arrival],
    now: Callable[[], float],
    progress: Callable[[float, list[Request]], None] | None,
    errors: Counter[str],
) -> None:
    """Each arrival at its time, and each throttled request again when it was told to."""
    queue: list[tuple[float, int, Request]] = []
    order = 0
    upcoming = iter(schedule)
    next_arrival = next(upcoming, None)
    last_report = -1.0
    while next_arrival is not None or queue:
        due_arrival = next_arrival.at if next_arrival is not None else float("inf")
        due_retry = queue[0][0] if queue else float("inf")
        wait = min(due_arrival, due_retry) - now()
        if wait > 0:
            time.sleep(min(wait, 0.05))
            if now() - last_report >= 0.5:
                last_report = now()
                _report(progress, now, collector)
            continue
        if due_retry <= due_arrival:
            request = heapq.heappop(queue)[2]
        else:
            assert next_arrival is not None
            request = Request(next_arrival, next_arrival.at + collector.patience)
            with collector.lock:
                collector.requests.append(request)
            next_arrival = next(upcoming, None)
        retry_at = _submit(driver, collector, request, now(), errors)
        if retry_at is not None:
            order += 1
            heapq.heappush(queue, (retry_at, order, request))


def _report(
    progress: Callable[[float, list[Request]], None] | None, now: Callable[[], float], collector: _Collector
) -> None:
    if progress is not None:
        progress(now(), collector.requests)


def _submit(
    driver: Driver, collector: _Collector, request: Request, now: float, errors: Counter[str]
) -> float | None:
    """Publish; on ``Throttled`` the time to come back, or None when patience runs out."""
    try:
        task_id = driver.submit(request.arrival)
    except Throttled as refused:
        request.throttles += 1
        back = now + max(0.01, float(refused.retry_after or 0.0))
        if back < request.deadline:
            return back
        with collector.lock:
            request.outcome, request.detail, request.ended_at = "rejected", str(refused)[:200], now
        return None
    except Exception as error:  # a publish the caller sees fail
        errors[type(error).__name__] += 1
        with collector.lock:
            request.outcome, request.ended_at = "error", now
            request.detail = f"publish failed: {type(error).__name__}: {error}"[:200]
        return None
    with collector.lock:
        request.task_ids.append(task_id)
    collector.track(request, task_id)
    return None
