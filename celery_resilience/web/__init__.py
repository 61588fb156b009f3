"""Who is publishing, set once per web request: middleware for the frameworks that publish
most Celery work. Each sets ``caller(user_id=..., tier=...)`` around the request, so every
``delay()`` the request makes is admitted for its user.

- ``django``: ``ResilienceMiddleware`` (``pip install celery-resilience[django]``);
- ``starlette``: ``ResilienceMiddleware`` for Starlette and FastAPI
  (``celery-resilience[fastapi]``);
- ``flask``: ``init_app(app, ...)`` (``celery-resilience[flask]``).

Import the module of your framework; none is imported here.
"""
