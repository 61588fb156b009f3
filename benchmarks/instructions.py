"""Instructions per publish, counted by valgrind: the plugin's own cost on each publish,
free of the machine's drift.

    python benchmarks/instructions.py [--publishes 2000]

On a small machine the publish ratio of ``benchmarks/topologies.py`` moves by a few
hundredths from one run to the next, as much as a change to the gate would move it.
Instructions do not drift. Each contender runs in its own process under valgrind
(``callgrind``), which counts only the instructions executed while the publishes are
made (inside ``map``, which calls them): not the set-up, not the warm-up. It runs twice,
with a quarter of the publishes and with all of them: the difference in instructions
over the difference in publishes is what one publish costs. Two counts of the same
contender agree to within about a thousandth.

What counts is the publishing process's own work in user space, the broker's client
(kombu, redis-py) included: not the kernel's, not the servers'. The store's leases
outlast the run, so no store round trip is made while counting
(``benchmarks/topologies.py`` measures the renewals).

Contenders: plain ``apply_async`` of an app without the plugin; the same with the
``resilience`` header a gated publish carries (what workers read); ``ResilientTask`` with
token leases; and its gate alone, the publish left out. Needs valgrind on the PATH.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CONTENDERS = ("plain", "plain with header", "resilient", "gate alone")
WARM_UP = 300


def publish(contender: str, publishes: int, prefix: str) -> None:
    """In the counted process: set up both apps, warm both up, make ``publishes`` of one."""
    import redis
    from topologies import BROKER, GENEROUS, STORE, USERS, make_app, make_plain_app, with_header

    # Work done once a second (the load signals' refresh) would count per publish here,
    # where valgrind slows publishing fifty-fold: it is left to the hour.
    queue = prefix  # of this process alone
    app, resilient = make_app(
        STORE, prefix, queue, GENEROUS, long_leases=True, resilience_adaptive_interval=3600
    )
    plain_app, plain = make_plain_app(queue)
    resilient, plain = resilient._get_current_object(), plain._get_current_object()
    with app.producer_or_acquire() as producer, plain_app.producer_or_acquire() as plain_producer:
        calls: dict[str, Callable[[int], Any]] = {
            "plain": lambda index: plain.apply_async(producer=plain_producer),
            "plain with header": lambda index: plain.apply_async(
                producer=plain_producer, headers=with_header(USERS[index % 10])
            ),
            "resilient": lambda index: resilient.apply_async(producer=producer, user_id=USERS[index % 10]),
        }
        for index in range(WARM_UP):
            for call in calls.values():
                call(index)
        if contender == "gate alone":
            resilient._publish = lambda args, kwargs, options: None
            call = calls["resilient"]
        else:
            call = calls[contender]
        # What set-up left lives on outside the collector's view: a collection that the
        # publishes set off scans their own objects, not the whole heap.
        gc.collect()
        gc.freeze()
        # Counted: only what runs inside ``map``'s step (valgrind's --toggle-collect).
        collections.deque(map(call, range(publishes)), maxlen=0)
    redis.Redis.from_url(BROKER).delete(queue)


def count(contender: str, publishes: int) -> int:
    """The instructions a process executed making ``publishes`` of ``contender`` inside
    ``map``: valgrind counts only what runs there."""
    run = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=map_next",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--count",
            contender,
            str(publishes),
            f"bench-{uuid.uuid4().hex[:8]}",
        ],
        capture_output=True,
        text=True,
        check=True,
        # The same dictionaries in every run; no threads of a numerical library beside.
        env={**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"},
    )
    found = re.search(r"Collected\s*:\s*(\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"valgrind printed no instruction count:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def per_publish(contender: str, publishes: int) -> float:
    """Instructions one publish costs: the slope between counts of a quarter of the
    publishes and of all of them. Some work lands in the counted stretch once, whatever
    its length (the same for every contender), which a count divided by its publishes
    would spread over them."""
    few = publishes // 4
    return (count(contender, publishes) - count(contender, few)) / (publishes - few)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument(
        "--count", nargs=3, metavar=("CONTENDER", "PUBLISHES", "PREFIX"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.count:
        contender, publishes, prefix = args.count
        publish(contender, int(publishes), prefix)
        return
    if shutil.which("valgrind") is None:
        print("instructions per publish: needs valgrind on the PATH (not found); skipped")
        return
    print(f"instructions per publish over {args.publishes} publishes, counted by valgrind\n")
    # Two counted processes at a time (a count does not depend on what else runs).
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = {contender: pool.submit(per_publish, contender, args.publishes) for contender in CONTENDERS}
        costs = {contender: counted.result() for contender, counted in counts.items()}
    plain = costs["plain"]
    for contender, cost in costs.items():
        print(f"  {contender:18} {cost / 1000:8.1f} k instructions, {cost / plain:6.3f} x plain")
    print(
        f"\n  the plugin's own, per publish: {(costs['resilient'] - plain) / 1000:.1f} k "
        f"(the header {(costs['plain with header'] - plain) / 1000:.1f} k, "
        f"the gate {costs['gate alone'] / 1000:.1f} k)"
    )


if __name__ == "__main__":
    main()
