"""Sojourn-time shedding under overload, with a real worker, against plain FIFO.

    python benchmarks/overload.py

One worker (four threads) in front of a provider over HTTP that takes ``SERVICE`` seconds
a call: a capacity of ``4 / SERVICE`` calls a second. Requests are interactive work a
user waits on for ``PATIENCE`` seconds (shedding: target 0.5 s, interval 0.5 s, deadline
1 s: the deadline twice the target and the interval the target, as by default). Per
variant (``fifo``: nothing shed; ``shed``: ``resilience_shedding``; ``expires``:
Celery's own fixed ``expires`` of the deadline on every publish, under overload only),
two loads, arrivals paced by the clock:

- **overload**: twice the capacity for ``OVERLOAD`` seconds, then half of it for as long;
- **burst**: a mean of 0.8 of the capacity, in bursts (1.6 for a second, then nothing for
  a second);
- **chains**: three-step chains, each step a provider call, at twice the capacity in
  steps, then half: the share of provider step executions spent on chains whose user was
  not answered in time (a chain is shed whole at its first step, never halfway).

Per run: provider answers its user still waited for (within ``PATIENCE`` from publish to
finish), the p99 time to a provider answer and the p99 wait before one started, sheds,
and the p99 time from publish to the answer of a shed request; with ``expires``, the
tasks that expired unanswered. The figures go to ``benchmarks/results/overload.json`` as well
as to the screen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from stamp import ROOT, commit, day, machine
from workers import thread_worker

RESULTS = ROOT / "benchmarks" / "results" / "overload.json"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
SERVICE = 0.1
THREADS = 4
STEPS = 3  # a chain's steps, each a provider call
CAPACITY = THREADS / SERVICE
OVERLOAD = float(os.environ.get("BENCH_OVERLOAD_SECONDS", "20"))
DEADLINE = 1.0
PATIENCE = 3.0


class Provider:
    """A provider that answers every call after ``SERVICE`` seconds."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(SERVICE)
                body = b'{"answer": "from the provider"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def worker(variant: str) -> subprocess.Popen[bytes]:
    env = {"BENCH_OVERLOAD_VARIANT": variant, "BENCH_OVERLOAD_DEADLINE": f"{DEADLINE:g}"}
    return thread_worker("overloadapp", f"bench-overload-{variant}", f"overload-{variant}", THREADS, env)


def arrivals(load: str) -> list[float]:
    """Publish times from the start, for ``load``."""
    times: list[float] = []
    if load == "overload":
        for rate, start, length in ((2 * CAPACITY, 0.0, OVERLOAD), (0.5 * CAPACITY, OVERLOAD, OVERLOAD)):
            count = int(rate * length)
            times += [start + i / rate for i in range(count)]
    else:  # bursts: 1.6 x for a second, nothing for a second: a mean of 0.8
        rate = 1.6 * CAPACITY
        for second in range(0, int(2 * OVERLOAD), 2):
            times += [second + i / rate for i in range(int(rate))]
    return times


def warmed_up(variant: str, provider: Provider) -> tuple[Any, Any, subprocess.Popen[bytes]]:
    """The variant's app, its list of finished tasks (emptied) and its worker, once up."""
    os.environ["BENCH_OVERLOAD_VARIANT"] = variant
    os.environ["BENCH_OVERLOAD_DEADLINE"] = f"{DEADLINE:g}"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import overloadapp

    done_list = redis.Redis.from_url(f"{REDIS}/12")
    done_list.delete(overloadapp.DONE)
    proc = worker(variant)
    overloadapp.ask.apply_async((provider.url,), user_id="warm-up")  # the worker is up once it is done
    deadline = time.time() + 60
    while done_list.llen(overloadapp.DONE) < 1 and time.time() < deadline:
        time.sleep(0.05)
    done_list.delete(overloadapp.DONE)
    return overloadapp, done_list, proc


def run(variant: str, load: str, provider: Provider) -> dict[str, Any]:
    """One load through one variant's worker: what each request got and when."""
    overloadapp, done_list, proc = warmed_up(variant, provider)
    published: dict[str, float] = {}
    start = time.time()
    for offset in arrivals(load):
        wait = start + offset - time.time()
        if wait > 0:
            time.sleep(wait)
        users = f"user-{len(published) % 50}"
        expiry = {"expires": DEADLINE} if variant == "expires" else {}
        published[overloadapp.ask.apply_async((provider.url,), user_id=users, **expiry).id] = time.time()
    finish_by = time.time() + 10 * OVERLOAD
    while done_list.llen(overloadapp.DONE) < len(published) and time.time() < finish_by:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [json.loads(raw) for raw in done_list.lrange(overloadapp.DONE, 0, -1)]
    with overloadapp.app.connection_for_write() as connection:
        connection.default_channel.queue_purge(overloadapp.QUEUE)
    overloadapp.resilience.store.purge()
    mine = [row for row in finished if row["id"] in published]
    waits = [(row["at"] - published[row["id"]], row["shed"]) for row in mine if not row.get("expired")]
    provider_rows = [row for row in mine if not row["shed"] and row.get("started")]
    started = [row["started"] - published[row["id"]] for row in provider_rows]
    answered = sorted(w for w, shed in waits if not shed)
    shed = sorted(w for w, shed in waits if shed)
    in_time = [w for w in answered if w <= PATIENCE]
    return {
        "requests": len(published),
        "finished": len(mine),
        "expired": sum(1 for row in mine if row.get("expired")),
        "p99_wait_before_provider": percentile(started, 0.99),
        "provider_in_time": len(in_time),
        "provider_late": len(answered) - len(in_time),
        "p99_to_provider_answer": percentile(answered, 0.99),
        "sheds": len(shed),
        "p99_to_shed_answer": percentile(shed, 0.99),
        "drain_seconds": max((row["at"] for row in finished), default=start) - start,
    }


def run_chains(variant: str, provider: Provider) -> dict[str, Any]:
    """Three-step chains (each step a provider call) at twice the capacity in steps, then
    half: provider step executions spent on chains whose user was not answered in time."""
    from celery import chain

    overloadapp, done_list, proc = warmed_up(variant, provider)
    published: dict[str, float] = {}
    start = time.time()
    times = arrivals("overload")  # in steps: a chain every STEPS of them
    for offset in times[: len(times) // STEPS]:
        wait = start + offset * STEPS - time.time()
        if wait > 0:
            time.sleep(wait)
        calls = chain(overloadapp.ask.s(provider.url), *[overloadapp.step.s(provider.url)] * (STEPS - 1))
        last = calls.apply_async(user_id=f"user-{len(published) % 50}")
        first = last
        while first.parent is not None:
            first = first.parent
        published[first.id] = time.time()

    finish_by = time.time() + 10 * OVERLOAD
    while not _chains_ended(done_list, overloadapp.DONE, published) and time.time() < finish_by:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rows = [json.loads(raw) for raw in done_list.lrange(overloadapp.DONE, 0, -1)]
    with overloadapp.app.connection_for_write() as connection:
        connection.default_channel.queue_purge(overloadapp.QUEUE)
    overloadapp.resilience.store.purge()
    by_chain: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["root"] in published:
            by_chain.setdefault(row["root"], []).append(row)
    executed = wasted = in_time = shed = 0
    for root, steps in by_chain.items():
        ran = sum(1 for row in steps if not row["shed"])
        executed += ran
        if any(row["shed"] for row in steps):
            shed += 1
            wasted += ran
        elif len(steps) == STEPS and max(row["at"] for row in steps) - published[root] <= PATIENCE:
            in_time += 1
        else:
            wasted += ran
    return {
        "chains": len(published),
        "answered_in_time": in_time,
        "shed_whole": shed,
        "step_executions": executed,
        "wasted_share": wasted / executed if executed else 0.0,
    }


def _chains_ended(done_list: Any, key: str, published: dict[str, float]) -> bool:
    """Whether every chain ended: shed at its first step, or all its steps finished."""
    steps: dict[str, list[bool]] = {}
    for raw in done_list.lrange(key, 0, -1):
        row = json.loads(raw)
        steps.setdefault(row["root"], []).append(row["shed"])
    return all(any(steps.get(root, [])) or len(steps.get(root, [])) == STEPS for root in published)


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    if len(sys.argv) == 3:  # one run, in a process of its own (one app per variant)
        if sys.argv[2] == "chains":
            print(json.dumps(run_chains(sys.argv[1], Provider())))
        else:
            print(json.dumps(run(sys.argv[1], sys.argv[2], Provider())))
        return
    results: dict[str, Any] = {"stamp": {"commit": commit(), "machine": machine(), "day": day()},
                               "service": SERVICE, "threads": THREADS, "deadline": DEADLINE,
                               "target": 0.5, "patience": PATIENCE, "overload_seconds": OVERLOAD,
                               "runs": {}}  # fmt: skip
    for load in ("overload", "burst"):
        for variant in ("fifo", "shed", "expires") if load == "overload" else ("fifo", "shed"):
            done = subprocess.run([sys.executable, __file__, variant, load], capture_output=True, text=True,
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-3000:])
            results["runs"][f"{load}/{variant}"] = row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{load:<9} {variant:<5} {json.dumps(row)}", flush=True)
    results["chains"] = {}
    for variant in ("fifo", "shed"):
        done = subprocess.run([sys.executable, __file__, variant, "chains"], capture_output=True, text=True,
                              check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        results["chains"][variant] = row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"chains    {variant:<5} {json.dumps(row)}", flush=True)
    fifo, shed = results["runs"]["overload/fifo"], results["runs"]["overload/shed"]
    ratio = shed["provider_in_time"] / max(1, fifo["provider_in_time"])
    print(f"\nprovider answers within {PATIENCE:g}s under overload: shedding {ratio:.1f} x FIFO;"
          f" sheds in bursts at 0.8 x: {results['runs']['burst/shed']['sheds']}; provider steps of 3-step"
          f" chains wasted: FIFO {results['chains']['fifo']['wasted_share']:.1%},"
          f" shedding {results['chains']['shed']['wasted_share']:.1%}")  # fmt: skip
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"(written to {RESULTS.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
