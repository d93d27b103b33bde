"""Error pages: JSON for API paths (clients parse them), HTML for people."""
from __future__ import annotations

from django.http import JsonResponse
from django.views.defaults import page_not_found, server_error


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def crashed(request):
    if _is_api(request):
        return JsonResponse({"detail": "Server error; it has been logged."}, status=500)
    return server_error(request)
