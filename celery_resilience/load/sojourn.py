"""Sojourn-time shedding at dequeue: CoDel's rule (Nichols and Jacobson) for task queues.

Admission decides who may add work; once work is queued, Celery serves it first come,
first served, however stale it has grown. How much is queued says little about whether
a queue is overloaded (a burst fills it and drains); how long work waited does. The rule,
per queue and request type, as each worker process sees its own dequeues:

- a task that waited less than ``target`` in the queue (from its admission, or from its
  ETA when it was paced: pacing is not queueing) ends any episode: nothing is shed;
- once every task for ``interval`` seconds has waited longer than ``target`` (the least
  sojourn over the interval is above it: a standing queue, not a burst), the queue is
  overloaded, and a task whose user would wait past its request type's ``deadline``
  (since admission, pacing included, with the task's own run foreseen) skips the
  provider: its fallback chain answers it in the worker, at once, from the steps that
  call no provider (handed on as a new message it would wait behind the backlog), or it
  fails at once with ``Throttled`` when there is none. Either way the worker is free for
  work that is still fresh;
- as CoDel does (RFC 8289), a queue that was overloaded lately is overloaded again as
  soon as a task waits past the target, within ``REENTER`` intervals of the episode's
  end: shedding keeps the wait under the target, which ends the episode, and waiting a
  whole interval again would let the standing queue rebuild each time. A burst never
  starts an episode, so it never sheds.

Sojourn is used to detect overload and shed, never to reorder the queue (reordering by
age does nothing on a fair queue and hurts an unfair one).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ..errors import ConfigurationError

__all__ = ["SojournPolicy", "SojournWatch", "DEFAULT_SHEDDING", "read_shedding"]


@dataclass(frozen=True, slots=True)
class SojournPolicy:
    target: float
    interval: float
    deadline: float


# Per request type (the default request types'); a request type of the user's own takes
# the ``default`` entry. Only work a user is known to wait on is shed unless configured:
# a backlog of other work (``default``, ``background``, ``batch``) is expected to wait.
# The deadline is twice the target: in an overload some work must be answered without
# the provider, and serving the fresh keeps every provider answer within twice the
# target, where serving the stale would make every one late. The interval is the
# target: the deadline is what spares a burst (its work is served before it), and each
# interval a standing queue lasts before it sheds is served late (up to target +
# interval), so an interval past the target would put that work past the deadline.
_WAITED_ON = SojournPolicy(target=5.0, interval=5.0, deadline=10.0)
DEFAULT_SHEDDING: Mapping[str, SojournPolicy | None] = MappingProxyType(
    {
        "critical_business": SojournPolicy(target=10.0, interval=10.0, deadline=20.0),
        "interactive": _WAITED_ON,
        "default": None,
        "background": None,
        "batch": None,
    }
)


def read_shedding(setting: str, value: object) -> Mapping[str, SojournPolicy | None]:
    """``resilience_shedding``: request type -> ``{"target", "interval", "deadline"}`` (each
    optional, over the defaults), or None for a request type never shed."""
    if value is None:
        return DEFAULT_SHEDDING
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            setting, "a mapping of request type to {'target': s, 'interval': s, 'deadline': s} or None", value
        )
    found = dict(DEFAULT_SHEDDING)
    for request_type, spec in value.items():
        where = f"{setting}[{request_type!r}]"
        if not isinstance(request_type, str) or not request_type:
            raise ConfigurationError(setting, "request type names as keys", request_type)
        if spec is None:
            found[request_type] = None
            continue
        if not isinstance(spec, Mapping) or not set(spec) <= {"target", "interval", "deadline"}:
            raise ConfigurationError(where, "a mapping with 'target', 'interval' and 'deadline'", spec)
        base = found.get(request_type) or _WAITED_ON
        numbers = {"target": base.target, "interval": base.interval, "deadline": base.deadline}
        for key, number in spec.items():
            if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
                raise ConfigurationError(f"{where}[{key!r}]", "a number of seconds > 0", number)
            numbers[key] = float(number)
        if numbers["deadline"] < numbers["target"]:
            raise ConfigurationError(
                f"{where}['deadline']", f"at least the target ({numbers['target']:g}s)", numbers["deadline"]
            )
        found[request_type] = SojournPolicy(**numbers)
    return MappingProxyType(found)


# Intervals after an episode's end within which a wait past the target starts the next
# one at once (RFC 8289's 16).
REENTER = 16
# Weight of a task's latest run in its smoothed run time.
RUN_WEIGHT = 0.2


class SojournWatch:
    """One process's view of how long its tasks waited, per queue and request type."""

    def __init__(self, policies: Mapping[str, SojournPolicy | None]) -> None:
        self.policies = policies
        self._runs: dict[str, float] = {}  # task name -> how long its runs take, smoothed
        self._first_above: dict[tuple[str, str], float] = {}
        self._last_seen: dict[tuple[str, str], float] = {}
        self._ended: dict[tuple[str, str], float] = {}  # when the last episode ended
        self._lock = threading.Lock()

    def ran(self, task: str, seconds: float) -> None:
        """A run of ``task`` took ``seconds``: what the next one is foreseen to take."""
        with self._lock:
            known = self._runs.get(task)
            self._runs[task] = seconds if known is None else known + RUN_WEIGHT * (seconds - known)

    def run_time(self, task: str) -> float:
        """How long a run of ``task`` takes in this process, smoothed (0 before the first)."""
        with self._lock:
            return self._runs.get(task, 0.0)

    def policy(self, request_type: str) -> SojournPolicy | None:
        if request_type in self.policies:
            return self.policies[request_type]
        return self.policies.get("default")

    def shed(
        self, queue: str, request_type: str, sojourn: float, now: float, age: float | None = None
    ) -> bool:
        """Note a task that waited ``sojourn`` seconds in the queue, dequeued at ``now``:
        whether to shed it. ``age`` is how long its user has waited (since admission,
        pacing included; ``sojourn`` when not given): what the deadline is held against."""
        policy = self.policy(request_type)
        if policy is None:
            return False
        key = (queue, request_type)
        with self._lock:
            last = self._last_seen.get(key)
            self._last_seen[key] = now
            if sojourn < policy.target or last is None or now - last > policy.interval:
                # Below the target, or the first task after a quiet spell (the queue may
                # have drained meanwhile): a new episode starts, if any.
                if sojourn < policy.target:
                    first = self._first_above.pop(key, None)
                    if first is not None and now - first >= policy.interval:
                        self._ended[key] = now
                else:
                    self._first_above[key] = now
                return False
            ended = self._ended.get(key)
            lately = ended is not None and now - ended < REENTER * policy.interval
            first = self._first_above.setdefault(key, now - policy.interval if lately else now)
        return now - first >= policy.interval and (sojourn if age is None else age) > policy.deadline

    def overloaded(self, queue: str, request_type: str, now: float) -> bool:
        """Whether every task of this queue and type for an interval waited past the target."""
        policy = self.policy(request_type)
        first = self._first_above.get((queue, request_type))
        return policy is not None and first is not None and now - first >= policy.interval
