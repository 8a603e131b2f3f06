"""The async page: submit an integer, get a task id back at once, and poll
its status every second until the result arrives."""
import json
from email.utils import parsedate_to_datetime

from celery.result import AsyncResult
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from .models import Calculation
from .tasks import UTC_PLUS_8, double_a_integer


def index(request):
    return render(request, "demo/index.html")


@require_POST
def calc(request):
    try:
        data = json.loads(request.body)
        number = int(data["number"])
        # The browser's `new Date().toUTCString()`: "Tue, 24 Nov 2026 02:40:00 GMT".
        event_time = parsedate_to_datetime(data["eventTime"]).astimezone(UTC_PLUS_8)
    except (ValueError, KeyError, TypeError) as exc:
        return JsonResponse({"error": f"bad request: {exc}"}, status=400)
    task = double_a_integer.apply_async((number, event_time), countdown=settings.DEMO_COUNTDOWN)
    Calculation.objects.create(number=number, task_id=task.id)
    return JsonResponse({"task_id": task.id})


@require_GET
def check_status(request):
    task_id = request.GET.get("task_id")
    if not task_id:
        return JsonResponse({"status": "NOT FOUND"}, status=404)
    result = AsyncResult(task_id)
    if result.status != "SUCCESS":
        return JsonResponse({"task_id": task_id, "status": result.status})
    event_time, processing_time, finish_time, doubled = result.get(timeout=10)
    return JsonResponse(
        {
            "task_id": task_id,
            "status": result.status,
            "eventTime": event_time.isoformat(),
            "processingTime": processing_time.isoformat(),
            "finishTime": finish_time.isoformat(),
            "result": doubled,
        }
    )
