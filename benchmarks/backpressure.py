"""Backpressure overhead, measured in one run on the local Redis and RabbitMQ.

    python benchmarks/backpressure.py [--calls N] [--rounds R]

1. ``ResilientTask.apply_async`` with queue-depth backpressure and the load monitor
   on, against admission alone, on the same Redis broker (target: <= 5 % slower). The
   depth is probed at most every ``resilience_depth_interval`` (0.3 s), never per publish.
2. The cost of one depth probe: Redis (the queue and its priority lists) and RabbitMQ
   (a passive declare), against a bare Redis PING for scale.

Rounds alternate and the median round is reported: compare the ratios, not the times.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import redis
from celery import Celery
from timing import measure

from celery_resilience import Resilience, ResilientTask
from celery_resilience.load.queue_depth import QueueDepths

REDIS = "redis://127.0.0.1:6379"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def app_for(name: str, broker: str, queue: str, backpressure: bool) -> tuple[Celery, ResilientTask]:
    app = Celery(name, broker=broker, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        resilience_store_url=f"{REDIS}/13",
        resilience_key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        resilience_tiers={"standard": {"rate": "1000000/s", "burst": 1000000}},
        resilience_prediction={"enabled": False},
    )
    if backpressure:
        app.conf.resilience_queue_thresholds = {queue: {"high": 10_000_000, "critical": 20_000_000}}
    Resilience(app)

    @app.task(base=ResilientTask, name=f"{name}.task", shared=False)
    def task() -> None:
        return None

    return app, task


def publish_benchmark(calls: int, rounds: int) -> dict[str, float]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    plain_app, plain = app_for("admission", f"{REDIS}/11", queue, backpressure=False)
    bp_app, with_bp = app_for("backpressure", f"{REDIS}/11", queue, backpressure=True)
    users = [f"user-{i}" for i in range(100)]
    try:
        with plain_app.producer_or_acquire() as p1, bp_app.producer_or_acquire() as p2:
            return measure(
                {
                    "admission alone": lambda i: plain.apply_async(producer=p1, user_id=users[i % 100]),
                    "admission + backpressure": lambda i: with_bp.apply_async(
                        producer=p2, user_id=users[i % 100]
                    ),
                },
                calls,
                rounds,
                with_index=True,
            )
    finally:
        redis.Redis.from_url(f"{REDIS}/11").delete(queue)
        for app in (plain_app, bp_app):
            Resilience.of(app).admission.flush_leases()
            Resilience.of(app).store.purge()


def probe_benchmark(calls: int, rounds: int) -> dict[str, float]:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    redis_app = Celery("probe-redis", broker=f"{REDIS}/11", set_as_current=False)
    amqp_app = Celery("probe-amqp", broker=AMQP, set_as_current=False)
    redis_depths = QueueDepths(redis_app, interval=0)
    amqp_depths = QueueDepths(amqp_app, interval=0)
    with amqp_app.connection_for_write() as connection:
        channel_of(connection).queue_declare(queue=queue, auto_delete=False)
    client = redis.Redis.from_url(f"{REDIS}/11")
    try:
        return measure(
            {
                "Redis PING (scale)": client.ping,
                "depth probe, Redis": lambda: redis_depths.depth(queue),
                "depth probe, RabbitMQ": lambda: amqp_depths.depth(queue),
            },
            max(100, calls // 4),
            rounds,
        )
    finally:
        with amqp_app.connection_for_write() as connection:
            channel_of(connection).queue_delete(queue)
        redis_depths.close()
        amqp_depths.close()


def channel_of(connection: Any) -> Any:
    """The connection's default channel, whose queue methods kombu's types do not declare."""
    return connection.default_channel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    print(f"backpressure benchmark: {args.calls} calls x {args.rounds} rounds, median round\n")
    publish = publish_benchmark(args.calls, args.rounds)
    for name, seconds in publish.items():
        print(f"  {name:<30} {seconds * 1e6:8.1f} us/publish  {1 / seconds:8.0f} publishes/s")
    slower = publish["admission + backpressure"] / publish["admission alone"] - 1
    print(f"  backpressure costs               {slower * 100:+7.1f} %     (target <= +5 %)\n")
    probes = probe_benchmark(args.calls, args.rounds)
    for name, seconds in probes.items():
        print(f"  {name:<30} {seconds * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
