"""An AI pipeline of the kind the reference describes, as a Celery app.

Two AI tasks, ``pipeline.classify_content`` (which team should handle a message) and
``pipeline.prioritise_task`` (how urgent a piece of work is), call an OpenAI-compatible
API with the official ``openai`` client. Each request holds a database connection while
it runs, as an ORM session per task does.

- ``celery_resilience_harness.pipeline.protected``: the same tasks with celery-resilience: tiers, a
  breaker per provider and for the database, a quota guard under the provider's limit,
  a second provider, rule-based answers and templates as fallbacks, and the database's
  pool use as a health probe. Everything is set through ``app.conf``.
- ``celery_resilience_harness.pipeline.plain``: the same tasks as plain Celery tasks with ordinary
  retries, the way the pipeline ran before the incident.

Run a worker of either against the fake services (``celery-resilience fake-services``)::

    PIPELINE_BROKER_URL=redis://127.0.0.1:6379/0 PIPELINE_SERVICES_URL=http://127.0.0.1:8080 \\
        celery -A celery_resilience_harness.pipeline.protected worker -P threads -c 16

``celery-resilience simulate`` drives both through the reference's incidents.
"""
