"""Flask: every request's publishes are admitted for its user.

flask --app examples.web.flask_app run
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from celery_resilience import Throttled
from celery_resilience.web.flask import init_app

from .tasks import summarise

app = Flask(__name__)
init_app(app, user_id=lambda: request.headers.get("X-User-Id"), tier=lambda: request.headers.get("X-Tier"))


@app.post("/summarise")
def summarise_view() -> ResponseReturnValue:
    try:
        result = summarise.delay(request.args.get("text", ""))
    except Throttled as refused:
        return jsonify(error=str(refused)), 429, {"Retry-After": str(round(refused.retry_after))}
    return jsonify(task_id=result.id), 202
