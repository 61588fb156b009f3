"""FastAPI (and Starlette): every request's publishes are admitted for its user.

uvicorn examples.web.fastapi_app:app
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from celery_resilience import Throttled
from celery_resilience.web.starlette import ResilienceMiddleware

from .tasks import summarise

app = FastAPI()
app.add_middleware(
    ResilienceMiddleware,
    user_id=lambda request: request.headers.get("X-User-Id"),
    tier=lambda request: request.headers.get("X-Tier"),
)


@app.post("/summarise")
async def summarise_view(text: str = "") -> JSONResponse:
    try:
        result = summarise.delay(text)
    except Throttled as refused:
        headers = {"Retry-After": str(round(refused.retry_after))}
        return JSONResponse({"error": str(refused)}, status_code=429, headers=headers)
    return JSONResponse({"task_id": result.id}, status_code=202)
