"""The view publishes with ``delay()``; the middleware has said who is calling."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from celery_resilience import Throttled

from ..tasks import summarise


def user_of(request: HttpRequest) -> str | None:
    value = request.headers.get("X-User-Id")
    return str(value) if value else None


def tier_of(request: HttpRequest) -> str | None:
    value = request.headers.get("X-Tier")
    return str(value) if value else None


@csrf_exempt  # type: ignore[untyped-decorator]
def summarise_view(request: HttpRequest) -> JsonResponse:
    try:
        result = summarise.delay(request.GET.get("text", ""))
    except Throttled as refused:
        response = JsonResponse({"error": str(refused)}, status=429)
        response["Retry-After"] = str(round(refused.retry_after))
        return response
    return JsonResponse({"task_id": result.id}, status=202)
