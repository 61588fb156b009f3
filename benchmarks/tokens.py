"""Provider budgets in tokens against a provider that enforces them, with real workers.

One command (``python benchmarks/tokens.py``), one run, every figure side by side:

1. The grid: accounts of 6,000, 30,000 and 200,000 tokens per minute, each with output
   caps (``max_tokens``) of 500, 2,000 and 4,000, and one account bound by requests (60 a
   minute, short calls). A minute is compressed to ``WINDOW`` seconds (15: a factor of
   4), the provider counts a sliding window as OpenAI does (a call is charged
   ``max(max_tokens, input)`` when it arrives, then what it used), answers are long
   (between half the cap and the cap), and demand is 1.6 times what the account serves.
   Per cell: what was served as a share of the limit (tokens, or requests where they
   bind) and the share of calls answered 429, for our budget (two worker processes of
   four threads, the limits written as documented); a plain client that counts
   ``usage`` after success, as LiteLLM's router does (the same workers); and the bound
   the provider's own rule leaves any client on this workload (``bound``: a simulation
   with instant calls and exact knowledge of the window).
2. Learned: no limit configured (a guess of half of it): the learned budget against the
   hidden limit as it halves and is restored, with the provider stating its limit in
   headers and without (what its 429s say, alone).
3. Outage: the provider down; provider calls per request with the breaker, with the
   retry budget alone, and with neither; the first fallback answer once the breaker is
   open.
4. Cost: one guarded call's budget check, tokens against requests only, on Redis.

The figures go to ``benchmarks/results/tokens.json`` as well as to the screen.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from celery_resilience_harness.simulation.token_provider import TokenLimits, TokenProvider
from stamp import commit, day, machine
from timing import measure

from celery_resilience.providers.learned import READ
from celery_resilience.providers.quota import ProviderQuota
from celery_resilience.providers.settings import read_provider_settings
from celery_resilience.store import RedisStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.validation import SettingsReader

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "tokens.json"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
WINDOW = float(os.environ.get("BENCH_TOKENS_WINDOW", "15"))
LIMIT = 60_000
SECONDS = float(os.environ.get("BENCH_TOKENS_SECONDS", "75"))  # the first window, then four
MEAN_TOKENS = 480  # a call's mean tokens in the learned runs: a prompt of about 60, an output of 420
DEMAND = 1.6  # times what the account serves
ACCOUNTS = (6_000, 30_000, 200_000)  # tokens per minute (per compressed window)
CAPS = (500, 2_000, 4_000)
REQUEST_BOUND = 60  # requests per minute, short calls
UNBOUND = 1_000_000
WORKER_LOG = Path(tempfile.gettempdir()) / "celery-resilience-bench-tokens-workers.log"


def bench_env(variant: str, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    return {"BENCH_TOKENS_VARIANT": variant, "BENCH_TOKENS_WINDOW": f"{WINDOW:g}",
            "BENCH_TOKENS_LIMIT": str(LIMIT), "BENCH_TOKENS_REQUESTS": str(LIMIT // MEAN_TOKENS),
            **(extra_env or {})}  # fmt: skip


def worker(variant: str, extra_env: dict[str, str] | None = None, name: str = "w") -> subprocess.Popen[bytes]:
    """A real worker: four threads, as many applications run their AI tasks."""
    env = {
        **os.environ,
        **bench_env(variant, extra_env),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}",
    }
    queue = f"bench-tokens-{variant}"
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tokenapp", "worker", "-P", "threads", "-c", "4",
         "-Q", queue, "-n", f"{name}-{os.getpid()}@%h", "--without-mingle", "--without-gossip",
         "--without-heartbeat", "-l", os.environ.get("BENCH_TOKENS_LOG", "error")],
        cwd=ROOT / "benchmarks", env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=WORKER_LOG.open("ab"),
    )  # fmt: skip


def app_for(variant: str, extra_env: dict[str, str] | None = None) -> Any:
    """The benchmark app as its workers configure it: each measurement runs in a process
    of its own (``run_apart``), so one import per process."""
    os.environ.update(bench_env(variant, extra_env))
    import tokenapp

    return tokenapp


def stop(procs: list[subprocess.Popen[bytes]], app: Any) -> None:
    """A cold stop: the measurement is over, what is left in the queue is purged."""
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with app.app.connection_for_write() as connection:
        connection.default_channel.queue_purge(app.QUEUE)
    app.resilience.store.purge()


def prompt(rng: random.Random) -> str:
    return "question " + "x" * rng.randint(100, 380)


def long_prompt(rng: random.Random, cap: int) -> str:
    """A prompt of 30 to 100 tokens asking for an answer between half the cap and the cap."""
    return (
        f"question {rng.random():.6f} "
        + "x" * rng.randint(100, 380)
        + f" answer in {rng.randint(cap // 2, cap)} tokens"
    )


def short_prompt(rng: random.Random) -> str:
    return f"question {rng.random():.6f} " + "x" * rng.randint(40, 120) + " answer in 20 tokens"


def feed(task: Any, url: str, rate: float, until: float, sent: list[Any], refused: list[float],
         make: Any = prompt) -> None:  # fmt: skip
    """Publish ``rate`` calls a second until ``until``: more than the provider can take."""
    rng = random.Random(7)
    start = time.monotonic()
    count = 0
    while time.monotonic() < until:
        due = start + count / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        try:
            sent.append(task.apply_async((make(rng), url)))
        except Exception:  # refused at enqueue (Throttled): counted, not queued
            refused.append(time.monotonic())
        count += 1


def cell_limits(tokens: int | None, cap: int) -> tuple[int, int, float]:
    """A cell's token and request limits per window, and a call's mean tokens."""
    if tokens is None:  # bound by requests: short calls
        return UNBOUND, REQUEST_BOUND, 70 + 20
    return tokens, UNBOUND // 100, 65 + 0.75 * cap


def served(provider: TokenProvider, start: float, end: float, tokens: int | None) -> dict[str, float]:
    """From the provider's own log, over the whole windows after the first: the share of
    the limit served (a sliding window lets a part-window look fuller than it is)."""
    measured_from = start + WINDOW
    windows = max(1, int((end - measured_from) / WINDOW))
    until = measured_from + windows * WINDOW
    if tokens is None:
        amount = sum(1 for at, _, _ in provider.served if measured_from <= at < until)
        limit, unit = REQUEST_BOUND, "requests"
    else:
        amount = sum(i + o for at, i, o in provider.served if measured_from <= at < until)
        limit, unit = tokens, "tokens"
    answers = [status for at, status in provider.answered if measured_from <= at < until]
    return {
        "served_share": amount / windows / limit,
        "share_429": answers.count(429) / len(answers) if answers else 0.0,
        "calls": len(answers),
        "most_in_window": provider.most_in_any_window(unit) / limit,
    }


def throughput(contender: str, tokens: int | None, cap: int) -> dict[str, float]:
    """One cell of the grid for our budget (``ours``) or the plain client (``after_success``)."""
    token_limit, request_limit, mean = cell_limits(tokens, cap)
    provider = TokenProvider(TokenLimits(tokens=token_limit, requests=request_limit), window=WINDOW)
    variant, task_name = (
        ("tokens", "bench.ask") if contender == "ours" else ("none", "bench.ask_after_success")
    )
    env = {"BENCH_TOKENS_LIMIT": str(token_limit), "BENCH_TOKENS_REQUESTS": str(request_limit),
           "BENCH_TOKENS_MAX": str(cap),
           "BENCH_TOKENS_COUNTS": "tokens" if tokens else "requests"}  # fmt: skip
    app = app_for(variant, env)
    procs = [worker(variant, env, name=f"w{i}") for i in range(2)]
    rate = DEMAND * (token_limit / mean if tokens else request_limit) / WINDOW
    make = (lambda rng: long_prompt(rng, cap)) if tokens else short_prompt
    try:
        for _ in procs:
            assert app.ping.delay().get(timeout=60) == "pong"
        start = time.time()
        sent: list[Any] = []
        refused: list[float] = []
        feed(app.app.tasks[task_name], provider.url, rate, time.monotonic() + SECONDS, sent, refused, make)
        end = time.time()
    finally:
        stop(procs, app)
        provider.close()
    return {**served(provider, start, end, tokens), "refused_at_enqueue": len(refused)}


def bound(tokens: int | None, cap: int, windows: int = 200) -> dict[str, float]:
    """What an ideal client is served by this provider on this workload: a simulation of
    the provider's rule (a call is admitted while the window's charges plus
    ``max(cap, input)`` fit the limit) with infinite demand, instant calls and a client
    that knows the window exactly and sends each call, in order, the moment it fits, over
    ``windows`` windows after the first. Calls that use less than their cap leave room
    no client can fill: the provider keeps a cap's worth free for the next arrival."""
    token_limit, request_limit, _ = cell_limits(tokens, cap)
    rng = random.Random(7)
    charges: list[tuple[float, int]] = []  # (arrival, tokens), in time order
    now, served, start, end = 0.0, 0, WINDOW, WINDOW * (windows + 1)
    used = 0
    text = long_prompt if tokens else lambda rng, cap: short_prompt(rng)
    prompt = text(rng, cap)
    while now < end:
        while charges and charges[0][0] <= now - WINDOW:
            used -= charges.pop(0)[1]
        input_tokens = math.ceil(len(prompt.encode()) / 4)
        output = int(prompt.rsplit("answer in ", 1)[1].split()[0])
        if used + max(cap, input_tokens) <= token_limit and len(charges) < request_limit:
            charges.append((now, input_tokens + output))
            used += input_tokens + output
            if now >= start:
                served += (input_tokens + output) if tokens else 1
            prompt = text(rng, cap)
            continue
        now = charges[0][0] + WINDOW  # the call waits for the next moment anything leaves
    return {"served_share": served / windows / (tokens or REQUEST_BOUND)}


def learned(headers: bool, phase: float = 20.0) -> dict[str, Any]:
    """The learned budget while the hidden limit is 60k, then 30k, then 60k again."""
    provider = TokenProvider(TokenLimits(tokens=LIMIT), window=WINDOW, headers=headers)
    app = app_for("learned")
    procs = [worker("learned", name=f"w{i}") for i in range(2)]
    samples: list[tuple[float, float]] = []  # (seconds from start, learned count per window)
    try:
        for _ in procs:
            assert app.ping.delay().get(timeout=60) == "pong"
        store = app.resilience.store
        start = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(0.25):
                rate = store.learn("p", "tokens", READ, LIMIT / 2 / WINDOW, 0.0)
                samples.append((time.monotonic() - start, rate * WINDOW))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        limits = [LIMIT, LIMIT // 2, LIMIT]
        changes: list[float] = []
        for index, limit in enumerate(limits):
            provider.set_limits(tokens=limit)
            changes.append(time.monotonic() - start)
            feed(app.ask, provider.url, 1.5 * LIMIT / MEAN_TOKENS / WINDOW,
                 start + (index + 1) * phase, [], [])  # fmt: skip
        stop_sampling.set()
        sampler.join()
    finally:
        stop(procs, app)
        provider.close()
    result: dict[str, Any] = {}
    for name, at, limit in (("start", changes[0], LIMIT), ("halved", changes[1], LIMIT // 2),
                            ("restored", changes[2], LIMIT)):  # fmt: skip
        window = [(t, count) for t, count in samples if at <= t < at + phase]
        settled = next(
            (t - at for t, _ in window if all(abs(c - limit) <= 0.1 * limit for u, c in window if u >= t)),
            None,
        )
        tail = [count for t, count in window if t >= at + phase / 2]
        result[name] = {
            "converged_after": settled,
            "tail_median": statistics.median(tail) / limit if tail else None,
        }
    answers = provider.statuses
    result["share_429"] = answers.count(429) / len(answers) if answers else 0.0
    return result


def outage(task_name: str, extra_env: dict[str, str] | None = None, requests: int = 200) -> dict[str, Any]:
    provider = TokenProvider(TokenLimits(requests=1_000_000), window=60)
    provider.outage = 503
    app = app_for("outage", extra_env)
    procs = [worker("outage", extra_env)]
    try:
        assert app.ping.delay().get(timeout=60) == "pong"
        task = app.app.tasks[task_name]
        pending = [task.apply_async((f"question {i}", provider.url)) for i in range(requests)]
        results = [result.get(timeout=300) for result in pending]
        first_answer = None
        if task_name == "bench.ask_down":
            begin = time.perf_counter()
            task.apply_async(("one more", provider.url)).get(timeout=30)
            first_answer = time.perf_counter() - begin
    finally:
        stop(procs, app)
        provider.close()
    return {
        "calls_per_request": len(provider.statuses) / requests,
        "answered": len(results),
        "first_fallback_ms": None if first_answer is None else first_answer * 1000,
    }


def cost(calls: int = 2000, rounds: int = 7) -> dict[str, float]:
    """One budget check per guarded call: a reservation in requests, or in requests and tokens."""
    prefix = f"bench-tokens-cost-{os.getpid()}"
    store = RedisStore(f"{REDIS}/15", KeySpace(prefix, 16))
    budgets = {
        "requests": {"requests": "100000000/m"},
        "tokens": {"requests": "100000000/m", "tokens": "1000000000/m"},
    }
    conf = {"resilience_providers": budgets}
    quota = ProviderQuota(read_provider_settings(SettingsReader(conf)), lambda: store)
    try:
        timings = measure(
            {
                "requests": lambda: quota.reserve("requests"),
                "tokens": lambda: quota.give_back(quota.reserve("tokens", "t", 60, 300)[0]),  # type: ignore[arg-type]
                "tokens_reserve_only": lambda: quota.reserve("tokens", "t", 60, 300),
            },
            calls,
            rounds,
        )
    finally:
        store.purge()
        store.close()
    return {name: seconds * 1e6 for name, seconds in timings.items()}


def run_apart(section: str, *args: str) -> Any:
    """One measurement in a fresh process (its own app, configured like its workers)."""
    done = subprocess.run(
        [sys.executable, __file__, section, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{section} {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cells() -> list[tuple[int | None, int]]:
    """The grid's cells: (tokens per window or None for the request-bound account, cap)."""
    grid: list[tuple[int | None, int]] = [(tokens, cap) for tokens in ACCOUNTS for cap in CAPS]
    only = os.environ.get("BENCH_TOKENS_CELLS")  # e.g. "6000x4000,requests": a subset
    grid.append((None, 100))
    if only:
        wanted = set(only.split(","))
        grid = [cell for cell in grid if (f"{cell[0]}x{cell[1]}" if cell[0] else "requests") in wanted]
    return grid


def grid_section(results: dict[str, Any]) -> None:
    print(f"Grid: a minute compressed to {WINDOW:g} s (factor {60 / WINDOW:g}); answers between half the cap "
          f"and the cap; demand {DEMAND:g}x what the account serves")  # fmt: skip
    heads = " | ".join(f"{name:>15}" for name in ("ours", "after success", "bound"))
    print(f"{'account / minute':>18} {'max_tokens':>10} | {heads}")
    print(f"{'':>18} {'':>10} | {'served   429':>15} | {'served   429':>15} | {'served':>15}")
    for tokens, cap in cells():
        name = f"{tokens:,} tokens" if tokens else f"{REQUEST_BOUND} requests"
        row = {
            "ours": run_apart("throughput", "ours", str(tokens or 0), str(cap)),
            "after_success": run_apart("throughput", "after_success", str(tokens or 0), str(cap)),
            "bound": bound(tokens, cap),
        }
        results["grid"].append({"tokens_per_minute": tokens, "requests_per_minute": None if tokens else
                                REQUEST_BOUND, "max_tokens": cap, **row})  # fmt: skip
        shown = " | ".join(f"{row[k]['served_share']:>7.1%} {row[k]['share_429']:>6.2%}"
                           for k in ("ours", "after_success"))  # fmt: skip
        shown += f" | {row['bound']['served_share']:>7.1%}"
        print(f"{name:>18} {cap if tokens else '-':>10} | {shown}", flush=True)


def main() -> None:
    if len(sys.argv) > 1:  # one measurement, run apart
        section, *args = sys.argv[1:]
        if section == "throughput":
            print(json.dumps(throughput(args[0], int(args[1]) or None, int(args[2]))))
        elif section == "learned":
            print(json.dumps(learned(args[0] == "headers")))
        else:
            env = {"BENCH_RETRY_BUDGET": "off"} if args[1:] == ["off"] else None
            print(json.dumps(outage(args[0], env)))
        return
    redis.Redis.from_url(REDIS).ping()
    print(f"(workers' output: {WORKER_LOG})")
    # BENCH_TOKENS_SECTIONS=learned (or grid,outage,cost) runs some; the others' figures
    # stay as the last run left them in the results, each section stamped with its run.
    sections = os.environ.get("BENCH_TOKENS_SECTIONS", "grid,learned,outage,cost").split(",")
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    stamp = {"commit": commit(), "machine": machine(), "day": day()}
    results.update({"window": WINDOW, "seconds": SECONDS, "demand": DEMAND})
    results.setdefault("stamps", {})
    for section in sections:
        results["stamps"][section] = stamp
    if "grid" in sections:
        results["grid"] = []
        grid_section(results)
        print()
    if "learned" in sections:
        results["learned"] = learned_section()
        print()
    if "outage" in sections:
        results["outage"] = outage_section()
        print()
    if "cost" in sections:
        results["cost_us"] = cost_section()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n(written to {RESULTS.relative_to(ROOT)})")


def learned_section() -> dict[str, Any]:
    found_all: dict[str, Any] = {}
    for headers in (True, False):
        found = run_apart("learned", "headers" if headers else "none")
        found_all["headers" if headers else "none"] = found
        label = "stated in headers" if headers else "AIMD, no headers"
        print(f"Learned budget ({label}): 429 share {found['share_429']:.2%}", flush=True)
        for phase in ("start", "halved", "restored"):
            row = found[phase]
            after = "never" if row["converged_after"] is None else f"{row['converged_after']:.1f} s"
            tail = "-" if row["tail_median"] is None else f"{row['tail_median']:.2f}"
            print(
                f"  {phase:9} within 10 % after {after:>6}; learned/limit in the phase's second half {tail}"
            )
    return found_all


def outage_section() -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, (task, budget) in {
        "breaker + retry budget": ("bench.ask_down", "on"),
        "retry budget alone": ("bench.ask_retried", "on"),
        "neither (max_retries=5)": ("bench.ask_retried", "off"),
    }.items():
        row = rows[name] = run_apart("outage", task, budget)
        first = (
            ""
            if row["first_fallback_ms"] is None
            else f"; first fallback once open {row['first_fallback_ms']:.0f} ms"
        )
        print(f"Outage, {name:26} provider calls per request {row['calls_per_request']:.2f}{first}")
    return rows


def cost_section() -> dict[str, float]:
    timings = cost()
    reserve, requests = timings["tokens_reserve_only"], timings["requests"]
    print(f"Budget check per call on Redis: requests {requests:.0f} µs, tokens (reserve) {reserve:.0f} µs "
          f"({reserve / requests:.2f}x), tokens reserve + reconcile {timings['tokens']:.0f} µs")  # fmt: skip
    return timings


if __name__ == "__main__":
    main()
