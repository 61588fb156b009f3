"""The scenario harness of celery-resilience: the reference's incidents, replayed.

A fake AI provider, database and Sentry on loopback, an example AI pipeline (before and
after the plugin), a load generator and the report. It installs apart from the library
(``pip install ./harness``); ``celery-resilience simulate`` is its command.
"""
