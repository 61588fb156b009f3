"""``celery-resilience simulate`` and ``celery-resilience fake-services``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .fake_provider import ProviderSwitches
from .fake_server import FakeServices
from .measures import RunSummary, summarise
from .report import render, write_json
from .runner import RunOptions, run_scenario
from .scenarios import DEFAULT_SCENARIOS, SCENARIOS, Scale, scenario
from .services_client import ServicesClient

__all__ = ["simulate_main", "fake_services_main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="celery-resilience simulate",
        description="Replay the reference's incidents against the example pipeline, before and after.",
    )
    parser.add_argument("scenario", nargs="?", default="all", choices=[*SCENARIOS, "all"])
    parser.add_argument("--scale", type=float, default=0.1, help="share of users, provider limit and pool")
    parser.add_argument("--speedup", type=float, default=6.0, help="how much faster simulated time runs")
    parser.add_argument("--patience", type=float, default=60.0, help="simulated seconds a user waits")
    parser.add_argument("--broker", help="drive real worker processes through this broker")
    parser.add_argument("--store", help="the workers' shared store (a Redis URL); needed with --broker")
    parser.add_argument("--backend", help="result backend (default: the broker)")
    parser.add_argument("--services-url", help="fake services already running (default: start them here)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes with --broker")
    parser.add_argument(
        "--external-workers",
        action="store_true",
        help="workers run elsewhere (docker compose): consume <queue>.before / <queue>.after",
    )
    parser.add_argument("--queue", default="pipeline", help="queue and key prefix of external workers")
    parser.add_argument("--concurrency", type=int, default=24, help="threads per worker")
    parser.add_argument(
        "--pipeline", default="celery_resilience_harness.pipeline", help="the example pipeline's package"
    )
    parser.add_argument("--out", type=Path, default=Path("simulation-report"), help="where reports go")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-chart", action="store_true", help="write the JSON report only")
    return parser


class _Progress:
    """One live line per run on a terminal, left on screen when the run ends; a line every
    few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.line = ""

    def __call__(self, line: str) -> None:
        self.line = line
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line[:160])
            sys.stderr.flush()
        elif time.monotonic() - self.last >= 5 or "worker(s) up" in line:
            self.last = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
        elif self.line:
            print(self.line, file=sys.stderr, flush=True)
        self.line = ""


def expected_seconds(names: Sequence[str], scale: Scale) -> float:
    """How long the replay takes, about: each scenario's traffic twice (before, after), each
    followed by a patience's wait for the last answers, and a few seconds to start and stop
    its worker."""
    wait = scale.wall(scale.patience) + 3
    return sum(2 * (scale.wall(scenario(name).minutes * 60) + wait) for name in names)


def _options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> RunOptions:
    try:
        scale = Scale(scale=args.scale, speedup=args.speedup, patience=args.patience)
    except ValueError as error:
        parser.error(str(error))
    if args.broker and not args.store:
        parser.error("--broker needs --store (a Redis URL): workers in other processes share breakers")
    if args.store and not args.broker:
        parser.error("--store needs --broker: the embedded default keeps everything in this process")
    if args.external_workers and not args.broker:
        parser.error("--external-workers needs --broker and --store: the workers' own")
    return RunOptions(
        scale=scale,
        broker=args.broker,
        store=args.store,
        backend=args.backend,
        pipeline=args.pipeline,
        processes=args.processes,
        concurrency=args.concurrency,
        seed=args.seed,
        external_workers=args.external_workers,
        queue=args.queue,
        logs=args.out,
    )


def simulate_main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    options = _options(parser, args)
    names = list(DEFAULT_SCENARIOS) if args.scenario == "all" else [args.scenario]
    local = None
    if args.services_url is None:
        local = FakeServices({"primary": ProviderSwitches(), "secondary": ProviderSwitches()}).start()
    services = ServicesClient(local.url if local is not None else args.services_url)
    _start_sentry(services)
    where = (
        "embedded (memory transport, MemoryStore, in-process worker)"
        if options.embedded
        else f"workers on {options.broker}, store {options.store}"
    )
    print(f"celery-resilience simulate: {', '.join(names)}; {where}; fake services at {services.url}")
    minutes = expected_seconds(names, options.scale) / 60
    print(
        f"{len(names) * 2} runs (each scenario before and after), about {minutes:.0f} min in all; "
        f"workers' logs go to {args.out}/"
    )
    progress = _Progress()
    results: dict[str, dict[str, RunSummary]] = {}
    errors: dict[str, object] = {}
    try:
        for name in names:
            results[name] = {}
            for mode in ("before", "after"):
                data = run_scenario(scenario(name), mode, options, services, progress=progress)
                progress.done()
                results[name][mode] = summarise(data)
                errors[f"{name} {mode}"] = data.services["providers"]["primary"]["timeline"]
    finally:
        if local is not None:
            local.close()
    print()
    print(render(results, options.scale))
    _write_outputs(args.out, results, options.scale, where, errors, chart=not args.no_chart)
    lost = sum(pair["after"].tasks_lost for pair in results.values())
    if lost:
        print(f"{lost} task(s) lost with celery-resilience", file=sys.stderr)
    return 1 if lost else 0


def _write_outputs(
    out: Path,
    results: dict[str, dict[str, RunSummary]],
    scale: Scale,
    where: str,
    errors: dict[str, object],
    chart: bool,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.json"
    write_json(report, results, scale, {"mode": where})
    print(f"report: {report}")
    if not chart:
        return
    from .chart import chart_available, write_chart

    if chart_available():
        write_chart(out / "chart.png", results, errors)
        print(f"chart:  {out / 'chart.png'}")
    else:
        print("chart:  skipped (pip install 'celery-resilience[simulate]' for matplotlib)")


def _start_sentry(services: ServicesClient) -> None:
    """Events from this process's workers (the embedded default) go to the services' counter."""
    import sentry_sdk

    sentry_sdk.init(dsn=services.sentry_dsn(), traces_sample_rate=0.0)


def fake_services_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="celery-resilience fake-services",
        description="Serve the fake providers (primary, secondary), database and Sentry stand-in.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    services = FakeServices(
        {"primary": ProviderSwitches(), "secondary": ProviderSwitches()}, host=args.host, port=args.port
    )
    print(f"fake services on {services.url}: /primary/v1, /secondary/v1, /db, /sentry, /_control, /_stats")
    try:
        services.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        services.close()
    return 0
