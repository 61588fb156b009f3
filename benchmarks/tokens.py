"""Provider budgets in tokens against a provider that enforces them, with real workers.

One command (``python benchmarks/tokens.py``), one run, every figure side by side:

1. Throughput: a provider allowing 60,000 tokens per window (a minute, compressed to
   ``WINDOW`` seconds), outputs spread like real traffic (median 300, p99 2,000 tokens),
   four worker processes fed more work than the provider can take. Tokens served per
   window as a share of the limit, and the share of calls answered 429, for: our token
   budget; a request-count budget tuned to the same limit; counting
   ``usage.total_tokens`` after success only, as LiteLLM's router does.
2. Learned: no limit configured (a guess of half of it): the learned budget against the
   hidden limit as it halves and is restored, with the provider stating its limit in
   headers and without (AIMD alone).
3. Outage: the provider down; provider calls per request with the breaker, with the
   retry budget alone, and with neither; the first fallback answer once the breaker is
   open.
4. Cost: one guarded call's budget check, tokens against requests only, on Redis.
"""

from __future__ import annotations

import json
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
from timing import measure

from celery_resilience.providers.learned import READ
from celery_resilience.providers.quota import ProviderQuota
from celery_resilience.providers.settings import read_provider_settings
from celery_resilience.store import RedisStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.validation import SettingsReader

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
WINDOW = float(os.environ.get("BENCH_TOKENS_WINDOW", "15"))
LIMIT = 60_000
SECONDS = float(os.environ.get("BENCH_TOKENS_SECONDS", "45"))
MEAN_TOKENS = 480
WORKER_LOG = (
    Path(tempfile.gettempdir()) / "celery-resilience-bench-tokens-workers.log"
)  # a call's mean tokens: a prompt of about 60, an output of mean 420


def worker(variant: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_TOKENS_VARIANT": variant, "BENCH_TOKENS_WINDOW": f"{WINDOW:g}",
           "BENCH_TOKENS_LIMIT": str(LIMIT), "BENCH_TOKENS_REQUESTS": str(LIMIT // MEAN_TOKENS),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}", **(extra_env or {})}  # fmt: skip
    queue = f"bench-tokens-{variant}"
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tokenapp", "worker", "-P", "prefork", "-c", "4",
         "-Q", queue, "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "error"],
        cwd=ROOT / "benchmarks", env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=WORKER_LOG.open("ab"),
    )  # fmt: skip


def app_for(variant: str, extra_env: dict[str, str] | None = None) -> Any:
    """The benchmark app as its workers configure it: each measurement runs in a process
    of its own (``run_apart``), so one import per process."""
    os.environ.update({"BENCH_TOKENS_VARIANT": variant, "BENCH_TOKENS_WINDOW": f"{WINDOW:g}",
                       "BENCH_TOKENS_LIMIT": str(LIMIT), "BENCH_TOKENS_REQUESTS": str(LIMIT // MEAN_TOKENS),
                       **(extra_env or {})})  # fmt: skip
    import tokenapp

    return tokenapp


def stop(proc: subprocess.Popen[bytes], app: Any) -> None:
    """A cold stop: the measurement is over, what is left in the queue is purged."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with app.app.connection_for_write() as connection:
        connection.default_channel.queue_purge(app.QUEUE)
    app.resilience.store.purge()


def prompt(rng: random.Random) -> str:
    return "question " + "x" * rng.randint(100, 380)


def feed(task: Any, url: str, rate: float, until: float, sent: list[Any], refused: list[float]) -> None:
    """Publish ``rate`` calls a second until ``until``: more than the provider can take."""
    rng = random.Random(7)
    start = time.monotonic()
    count = 0
    while time.monotonic() < until:
        due = start + count / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        try:
            sent.append(task.apply_async((prompt(rng), url)))
        except Exception:  # refused at enqueue (Throttled): counted, not queued
            refused.append(time.monotonic())
        count += 1


def throughput(variant: str, task_name: str) -> dict[str, float]:
    provider = TokenProvider(TokenLimits(tokens=LIMIT), window=WINDOW)
    app = app_for(variant)
    proc = worker(variant)
    try:
        assert app.ping.delay().get(timeout=60) == "pong"
        start = time.time()
        sent: list[Any] = []
        refused: list[float] = []
        feed(app.app.tasks[task_name], provider.url, 1.5 * LIMIT / MEAN_TOKENS / WINDOW,
             time.monotonic() + SECONDS, sent, refused)  # fmt: skip
        end = time.time()
    finally:
        stop(proc, app)
        provider.close()
    measured_from = start + WINDOW  # after the first window: a steady state
    served = sum(i + o for at, i, o in provider.served if measured_from <= at < end)
    answers = [status for at, status in provider.answered if measured_from <= at < end]
    return {
        "served_share": served / ((end - measured_from) / WINDOW) / LIMIT,
        "share_429": answers.count(429) / len(answers) if answers else 0.0,
        "calls": len(answers),
        "most_in_window": provider.most_in_any_window() / LIMIT,
        "refused_at_enqueue": len(refused),
    }


def learned(headers: bool, phase: float = 20.0) -> dict[str, Any]:
    """The learned budget while the hidden limit is 60k, then 30k, then 60k again."""
    provider = TokenProvider(TokenLimits(tokens=LIMIT), window=WINDOW, headers=headers)
    app = app_for("learned")
    proc = worker("learned")
    samples: list[tuple[float, float]] = []  # (seconds from start, learned count per window)
    try:
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
        stop(proc, app)
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
    proc = worker("outage", extra_env)
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
        stop(proc, app)
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


def main() -> None:
    if len(sys.argv) > 1:  # one measurement, run apart
        section, *args = sys.argv[1:]
        if section == "throughput":
            print(json.dumps(throughput(args[0], args[1])))
        elif section == "learned":
            print(json.dumps(learned(args[0] == "headers")))
        else:
            env = {"BENCH_RETRY_BUDGET": "off"} if args[1:] == ["off"] else None
            print(json.dumps(outage(args[0], env)))
        return
    redis.Redis.from_url(REDIS).ping()
    print(f"(workers' output: {WORKER_LOG})")
    print(f"Provider: {LIMIT} tokens per {WINDOW:g} s window (a compressed minute), 4 worker processes\n")
    print(f"{'contender':38} {'served/limit':>12} {'429 share':>10} {'calls':>6} {'max window':>10}")
    for name, (variant, task) in {
        "token budget (ours)": ("tokens", "bench.ask"),
        "request-count budget": ("requests", "bench.ask"),
        "usage after success (LiteLLM-style)": ("none", "bench.ask_after_success"),
    }.items():
        row = run_apart("throughput", variant, task)
        print(f"{name:38} {row['served_share']:>11.1%} {row['share_429']:>10.2%} {row['calls']:>6.0f}"
              f" {row['most_in_window']:>10.1%}")  # fmt: skip
    print()
    for headers in (True, False):
        found = run_apart("learned", "headers" if headers else "none")
        label = "stated in headers" if headers else "AIMD, no headers"
        print(f"Learned budget ({label}): 429 share {found['share_429']:.2%}", flush=True)
        for phase in ("start", "halved", "restored"):
            row = found[phase]
            after = "never" if row["converged_after"] is None else f"{row['converged_after']:.1f} s"
            tail = "-" if row["tail_median"] is None else f"{row['tail_median']:.2f}"
            print(
                f"  {phase:9} within 10 % after {after:>6}; learned/limit in the phase's second half {tail}"
            )
    print()
    for name, (task, budget) in {
        "breaker + retry budget": ("bench.ask_down", "on"),
        "retry budget alone": ("bench.ask_retried", "on"),
        "neither (max_retries=5)": ("bench.ask_retried", "off"),
    }.items():
        row = run_apart("outage", task, budget)
        first = (
            ""
            if row["first_fallback_ms"] is None
            else f"; first fallback once open {row['first_fallback_ms']:.0f} ms"
        )
        print(f"Outage, {name:26} provider calls per request {row['calls_per_request']:.2f}{first}")
    print()
    timings = cost()
    reserve, requests = timings["tokens_reserve_only"], timings["requests"]
    print(f"Budget check per call on Redis: requests {requests:.0f} µs, tokens (reserve) {reserve:.0f} µs "
          f"({reserve / requests:.2f}x), tokens reserve + reconcile {timings['tokens']:.0f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
