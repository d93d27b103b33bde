"""Error pages: JSON for API paths (clients parse them), HTML for people."""
from __future__ import annotations

from http import HTTPStatus

from django.http import JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework.response import Response as ApiResponse


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


class JsonErrorsForApiMiddleware:
    """Under /api/, a client error that Django (not the API) answered with HTML, such as the debug
    404 page DEBUG shows for a path no route matches, or a CSRF or bad-host refusal, becomes the
    documented ``{"detail": ...}`` JSON with the same status. The API's own answers are left as
    negotiated (the browsable API's HTML included), and so are server errors: the handler above
    already answers them in JSON unless DEBUG asks for the traceback page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (_is_api(request) and 400 <= response.status_code < 500 and not isinstance(response, ApiResponse)
                and not response.get("Content-Type", "").startswith("application/json")):
            try:
                detail = "Not found." if response.status_code == 404 else HTTPStatus(response.status_code).phrase + "."
            except ValueError:  # a status the standard does not name
                detail = "Client error."
            converted = JsonResponse({"detail": detail}, status=response.status_code)
            for header in ("Allow", "WWW-Authenticate", "Retry-After"):
                if header in response:
                    converted[header] = response[header]
            return converted
        return response
