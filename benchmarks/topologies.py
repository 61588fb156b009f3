"""The publish path on each Redis topology, with eight publishing processes, in one run.

    python benchmarks/topologies.py [--processes 8] [--window 2] [--rounds 16] [--seconds 3] [--slot 0.25]

For one server (the local Redis), a three-primary Cluster with replicas and a Sentinel
group (each started here on loopback for its own measures only, stopped after), the
store being that topology and the broker the local Redis:

1. Publish ratio: ``ResilientTask.apply_async`` with token leases (the default) against a
   plain ``Task.apply_async`` of an app without the plugin (the plugin sees its own app's
   plain publishes too), on the same broker. In a round of ``--window`` seconds, every
   process publishes from a barrier to a shared deadline, as plain or as the contender
   by turns of ``--slot`` seconds on the shared clock: all processes run the same contender at
   the same time, so the store servers' work lands in its contender's turns, and a
   machine whose speed drifts from one second to the next slows both alike. The cost of
   a publish is the inverse of the publishes made in a contender's turns, and the
   publishers' CPU time per publish. Rounds come in pairs, starting with each contender
   in turn; a pair's ratio is the geometric mean of its two, and the median over pairs
   is reported. The publishing processes live through all the rounds of a measure, as
   a web server's do, and warm up before each timed run: a round costs its publishes.
   Twice: for 10 hot users (each publishing many times per lease window in every
   process, the case leases are for) and for 100 users (each about once per window per
   process here, where every publish makes a round trip).
   First, plain against a second app without the plugin: the measure's noise here; and
   plain against plain publishes carrying the ``resilience`` header a gated publish
   carries (what workers read), no plugin at work: the part of the cost that is the
   header's, not the gate's. Then, for the
   10 hot users, leases long enough (10 minutes, 10,000 tokens) that no store round trip is
   made while timed: the plugin's own work, apart from the renewals' round trips.
2. Over-admission: every process publishes as fast as it can for ``--seconds`` for the
   same ten users, each limited to 20/s with a burst of 10 and a grace of 2. Reported:
   the most any user got, against the plain limit over the run (``rate x T + burst +
   grace x (grace windows touched)``, ``T`` from the first process's start to the last one's stop, which the
   scheduler stretches past ``--seconds``) and against the documented bound with leases
   (``rate x (T + lease_window) + burst + grace x windows``).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import Celery

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.topologies: the test run's servers

from celery_resilience import Resilience, ResilientTask, Throttled
from tests.topologies import Cluster, SentinelGroup

REDIS = "redis://127.0.0.1:6379"
BROKER = f"{REDIS}/11"
RATE, BURST, GRACE, LEASE_WINDOW = 20, 10, 2, 0.2
WARM_UP = 100  # publishes of each contender before each timed run, unmeasured
# Seconds each contender publishes before the other's turn, in every process at once:
# short, so that the machine's drift slows both alike (``--slot 1``: plain against plain
# read 1.04 in two runs). The price: each turn of the contender starts with every
# lease over (the plain turn outlasted them), a round of renewals that a process
# publishing without a pause does not make (it renews each hot key once a lease window).
# The run prints the renewals made: the ratio with leases overstates their cost.
SLOT = 0.25
USERS = [f"user-{i}" for i in range(100)]
STORE = f"{REDIS}/13"  # the one-server topology: the local Redis
# Limits no publisher reaches: the publish ratio measures the plugin's cost, not refusals.
GENEROUS = {"standard": {"rate": "1000000/s", "burst": 1000000, "grace": 10}}


def with_header(user: str) -> dict[str, Any]:
    """The headers of a publish the gate admitted for ``user`` (what workers read)."""
    context = {"user_id": user, "tier": "standard", "request_type": "default", "decision": "allow"}
    return {"resilience": context}


def make_app(
    store_url: str, prefix: str, queue: str, tiers: dict[str, Any], *, long_leases: bool = False, **conf: Any
) -> tuple[Celery, Any]:
    app = Celery("bench-topology", broker=BROKER, set_as_current=False)
    app.conf.update(
        conf,
        task_default_queue=queue,
        resilience_store_url=store_url,
        resilience_key_prefix=prefix,
        resilience_tiers=tiers,
        resilience_default_tier="standard",
        resilience_lease_window=600.0 if long_leases else LEASE_WINDOW,
        resilience_lease_max_tokens=10_000 if long_leases else 16,
        resilience_throttle_strategies=[{"strategy": "reject_with_backoff", "seconds": 0}],
    )
    Resilience(app)

    @app.task(base=ResilientTask, name="bench.resilient", shared=False)
    def resilient() -> None:
        return None

    return app, resilient


def make_plain_app(queue: str) -> tuple[Celery, Any]:
    """Plain Celery on the same broker, without the plugin: the baseline (the plugin also
    sees every plain publish of its own app, which is part of its cost)."""
    app = Celery("bench-plain", broker=BROKER, set_as_current=False)
    app.conf.update(task_default_queue=queue)

    @app.task(name="bench.plain", shared=False)
    def plain() -> None:
        return None

    return app, plain


def publisher(
    store_url: str,
    prefix: str,
    queue: str,
    contender: str,
    users: int,
    window: float,
    slot: float,
    commands: Any,
    barrier: Any,
    start: Any,
    out: Any,
) -> None:
    """One publishing process, for every round of a measure: told which contender has the
    first turn (``None``: stop), it warms up both, waits for the others, publishes until
    the round's deadline, each contender in its turns on the shared clock, and reports,
    per contender, the publishes made and the CPU time spent."""
    app, resilient = make_app(store_url, prefix, queue, GENEROUS, long_leases=contender == "no-round-trips")
    renewals = count_renewals(app)
    plain_app, plain = make_plain_app(queue)
    # Plain against itself: the second contender is a second app without the plugin, as
    # the contender is a second app beside the baseline's.
    again_app, again = make_plain_app(queue)
    modes = ("plain", contender)
    with (
        app.producer_or_acquire() as producer,
        plain_app.producer_or_acquire() as plain_producer,
        again_app.producer_or_acquire() as again_producer,
    ):

        def publish(mode: str, index: int) -> None:
            if mode == "plain":
                plain.apply_async(producer=plain_producer)
            elif mode == "plain-again":
                again.apply_async(producer=again_producer)
            elif mode == "plain-with-header":
                again.apply_async(producer=again_producer, headers=with_header(USERS[index % users]))
            else:
                resilient.apply_async(producer=producer, user_id=USERS[index % users])

        while (parity := commands.get()) is not None:
            for mode in modes:
                for index in range(WARM_UP):
                    publish(mode, index)
            barrier.wait()
            began = start.value
            deadline = began + window

            def turn(now: float, began: float = began, parity: int = parity) -> int:
                """Whose turn it is on the shared clock: 0 plain, 1 the contender."""
                return (int((now - began) / slot) + parity) % 2

            counts, cpus = [0, 0], [0.0, 0.0]
            renewed = renewals[0]
            index, now = 0, time.monotonic()
            while now < deadline:
                which = turn(now)
                cpu = time.process_time()
                while now < deadline and turn(now) == which:
                    publish(modes[which], index)
                    counts[which] += 1
                    index += 1
                    now = time.monotonic()
                cpus[which] += time.process_time() - cpu
            out.put((counts, cpus, renewals[0] - renewed))
    Resilience.of(app).admission.flush_leases()


def count_renewals(app: Celery) -> list[int]:
    """The lease renewals this process's store calls carry, counted as they are made (the
    store's round trip with renewals is ``admit_many``: its first request is the publish's own)."""
    store = Resilience.of(app).store
    admit_many = store.admit_many
    renewals = [0]

    def counting(requests: Any) -> Any:
        renewals[0] += len(requests) - 1
        return admit_many(requests)

    store.admit_many = counting  # type: ignore[method-assign]
    return renewals


def flooder(store_url: str, prefix: str, queue: str, seconds: float, barrier: Any, out: Any) -> None:
    """One process publishing for ten users as fast as it can: what each was admitted, and
    when (wall clock) it started and stopped."""
    limited = {"standard": {"rate": f"{RATE}/s", "burst": BURST, "grace": GRACE}}
    app, resilient = make_app(store_url, prefix, queue, limited)
    admitted: Counter[str] = Counter()
    with app.producer_or_acquire() as producer:
        barrier.wait()
        started = time.time()
        deadline = time.monotonic() + seconds
        index = 0
        while time.monotonic() < deadline:
            user = USERS[index % 10]
            index += 1
            try:
                resilient.apply_async(producer=producer, user_id=user)
                admitted[user] += 1
            except Throttled:
                pass
        stopped = time.time()
    Resilience.of(app).admission.flush_leases()
    out.put((dict(admitted), started, stopped))


def run_processes(count: int, target: Callable[..., None], *args: Any) -> list[Any]:
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(count), context.Queue()
    processes = [context.Process(target=target, args=(*args, barrier, out)) for _ in range(count)]
    for process in processes:
        process.start()
    results = [out.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(60)
    return results


def clean(queue: str, store_url: str, prefix: str) -> None:
    redis.Redis.from_url(BROKER).delete(queue)
    app, _ = make_app(store_url, prefix, queue, {"standard": {"rate": "1/s"}})
    Resilience.of(app).store.purge()


def publish_ratio(
    store_url: str,
    processes: int,
    window: float,
    rounds: int,
    users: int,
    contender: str = "leases",
    slot: float = SLOT,
) -> tuple[float, float, float]:
    """(wall ratio, CPU ratio, lease renewals a second per process in the contender's turns)
    of ``contender`` against plain: what one publish costs, as the inverse of the
    publishes all processes made in its slots, and as their CPU time per publish. Every
    process runs the same contender at the same time, switching every ``slot`` by the
    shared clock: a machine whose speed drifts from one second to the next slows both
    alike, and the store's own work lands in its contender's slots. Rounds come in pairs,
    starting with each contender in turn; a pair's ratio is the geometric mean of its
    two, and the median over pairs is reported. A contender of ``"plain-again"`` (plain
    from a second app without the plugin) measures the noise, one of ``"plain-with-header"``
    the header alone (plain publishes carrying it), one of ``"no-round-trips"`` the gate
    with leases that outlast the run."""
    walls: list[float] = []
    cpus: list[float] = []
    renewed = 0
    prefix, queue = f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("fork")
    # The barrier's last arrival stamps the round's start: the slots are the same in every process.
    start = context.Value("d", 0.0)
    barrier = context.Barrier(processes, action=lambda: setattr(start, "value", time.monotonic()))
    out = context.Queue()
    commands = [context.Queue() for _ in range(processes)]
    publishers = [
        context.Process(
            target=publisher,
            args=(
                store_url,
                prefix,
                queue,
                contender,
                users,
                window,
                slot,
                commands[index],
                barrier,
                start,
                out,
            ),
        )
        for index in range(processes)
    ]
    broker = redis.Redis.from_url(BROKER)
    try:
        for process in publishers:
            process.start()
        for round_index in range(2 * math.ceil(rounds / 2)):
            for command in commands:
                command.put(round_index % 2)
            results = [out.get(timeout=300) for _ in publishers]
            broker.delete(queue)
            (plain_count, count) = (sum(counts[i] for counts, _, _ in results) for i in (0, 1))
            (plain_cpu, cpu) = (sum(spent[i] for _, spent, _ in results) for i in (0, 1))
            renewed += sum(renewals for _, _, renewals in results)
            walls.append(plain_count / count)
            cpus.append((cpu / count) / (plain_cpu / plain_count))
    finally:
        for command in commands:
            command.put(None)
        for process in publishers:
            process.join(60)
        clean(queue, store_url, prefix)
    # The contender publishes half of each round, in every process.
    renewals = renewed / (processes * len(walls) * window / 2)
    return _paired_median(walls), _paired_median(cpus), renewals


def _paired_median(ratios: list[float]) -> float:
    """The median over pairs of rounds (one starting with each contender) of the pair's geometric mean."""
    pairs = zip(ratios[::2], ratios[1::2], strict=True)
    return statistics.median(math.sqrt(first * second) for first, second in pairs)


def over_admission(store_url: str, processes: int, seconds: float) -> tuple[int, float, float, float]:
    """(most admitted to one user, the seconds from the first process's start to the last
    one's stop, the most against the plain limit over those seconds, against the bound
    with leases)."""
    prefix, queue = f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    try:
        totals: Counter[str] = Counter()
        results = run_processes(processes, flooder, store_url, prefix, queue, seconds)
        for admitted, _, _ in results:
            totals.update(admitted)
    finally:
        clean(queue, store_url, prefix)
    # Processes start when the scheduler lets them: the run spans more than ``seconds``.
    first, last = min(started for _, started, _ in results), max(stopped for _, _, stopped in results)
    span = last - first
    # The grace allowance renews each grace period (the rate's: one second here).
    graces = GRACE * (math.floor(last) - math.floor(first) + 1)
    most = max(totals.values())
    limit = RATE * span + BURST + graces
    bound = RATE * (span + LEASE_WINDOW) + BURST + graces
    return most, span, most / limit, most / bound


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--slot", type=float, default=SLOT, help="seconds of each contender's turn")
    args = parser.parse_args()
    print(f"publish path by topology: {args.processes} processes, rounds of {args.window:g} s "
          f"in turns of {args.slot:g} s, {args.rounds} rounds; over-admission over "
          f"{args.seconds:g} s\n")  # fmt: skip
    wall, cpu, _ = publish_ratio(
        STORE, args.processes, args.window, args.rounds, 10, "plain-again", args.slot
    )
    print(f"  noise floor: plain against plain from a second app, wall {wall:6.3f}, "
          f"publishers' CPU {cpu:6.3f}")  # fmt: skip
    wall, cpu, _ = publish_ratio(
        STORE, args.processes, args.window, args.rounds, 10, "plain-with-header", args.slot
    )
    print(f"  the header alone: plain publishes carrying the resilience header, 10 users, "
          f"wall {wall:6.3f}, publishers' CPU {cpu:6.3f}")  # fmt: skip
    # Each topology's servers run only while it is measured, as a deployment runs one of
    # them: a Cluster's and a Sentinel group's heartbeats would otherwise share the two
    # cores with every other topology's measures.
    topologies: dict[str, type[Cluster] | type[SentinelGroup] | None] = {
        "one server": None,
        "cluster": Cluster,
        "sentinel": SentinelGroup,
    }
    for name, servers in topologies.items():
        group = servers() if servers is not None else None
        try:
            if group is not None:
                group.start()
            url = group.url if group is not None else STORE
            measure_topology(name, url, args)
        finally:
            if group is not None:
                group.stop()


def measure_topology(name: str, url: str, args: argparse.Namespace) -> None:
    """One topology's lines: the publish ratio for 10 and 100 users, without round trips,
    and the over-admission."""
    for users in (10, 100):
        wall, cpu, renewals = publish_ratio(
            url, args.processes, args.window, args.rounds, users, slot=args.slot
        )
        print(f"  {name:10}  {users:3} users  publish ratio: wall {wall:6.3f}, "
              f"publishers' CPU {cpu:6.3f}; {renewals:.0f} lease renewals a second "
              "per process")  # fmt: skip
    wall, cpu, _ = publish_ratio(
        url, args.processes, args.window, args.rounds, 10, "no-round-trips", args.slot
    )
    print(f"  {name:10}   10 users  no round trip while timed: wall {wall:6.3f}, "
          f"publishers' CPU {cpu:6.3f}")  # fmt: skip
    most, span, over_limit, over_bound = over_admission(url, args.processes, args.seconds)
    print(f"  {name:10}  over-admission: most to one user {most} in {span:.2f} s, "
          f"{over_limit:5.3f} x the limit, {over_bound:5.3f} x the bound with leases")  # fmt: skip


if __name__ == "__main__":
    main()
