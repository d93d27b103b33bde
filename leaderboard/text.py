"""Text that no database can store: a NUL character (PostgreSQL refuses it in text and jsonb) and a
lone surrogate (a ``\\ud800`` JSON escape; not encodable as UTF-8). Every way text reaches the
database passes one of these guards:

- form fields and query strings: ``RefuseNulMiddleware`` answers 400 before any view runs (a NUL
  in a lookup such as ``benchmark=…`` or ``?family=…`` was a PostgreSQL DataError, a 500);
- JSON the public API or a form takes as data (hyperparameters): ``find_unstorable`` names the
  first bad key or string, and the caller refuses it with a message;
- JSON a runner posts (messages, log tails, results): ``storable`` replaces each bad character
  with U+FFFD, since a runner's text quotes a submission's output and must not lose the report.
"""
from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse

REPLACEMENT = "\ufffd"


def _bad_character(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        return "a lone surrogate (\\ud800–\\udfff)"
    return None


def _clean(text: str) -> str:
    if _bad_character(text) is None:
        return text
    return "".join(REPLACEMENT if ch == "\x00" or "\ud800" <= ch <= "\udfff" else ch for ch in text)


def find_unstorable(value: Any, root: str = "hparams") -> dict[str, str] | None:
    """The first key or string in a decoded JSON value that no database can keep as text, as
    ``{"what", "where"}`` (``where`` a path such as ``hparams['betas'][1]``, at most 80 characters),
    or None. Walks without recursion, so any depth is fine."""
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        where, item = stack.pop()
        texts: list[tuple[str, str]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                texts.append((f"{where} key {key!r}"[:80], str(key)))
                stack.append((f"{where}[{key!r}]"[:80], child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]"[:80], child) for i, child in enumerate(item))
        elif isinstance(item, str):
            texts.append((where, item))
        for place, text in texts:
            what = _bad_character(text)
            if what:
                return {"what": what, "where": place}
    return None


def storable(value: Any) -> Any:
    """A copy of a decoded JSON value whose keys and strings have every NUL and lone surrogate
    replaced by U+FFFD; other values are kept as they are. Iterative (no depth limit)."""
    if isinstance(value, str):
        return _clean(value)
    if not isinstance(value, dict | list):
        return value
    out: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, out)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in items:
            if isinstance(child, dict | list):
                copy: Any = {} if isinstance(child, dict) else []
                stack.append((child, copy))
            else:
                copy = _clean(child) if isinstance(child, str) else child
            if isinstance(target, dict):
                target[_clean(key) if isinstance(key, str) else key] = copy
            else:
                target.append(copy)
    return out


class RefuseNulMiddleware:
    """A NUL character in a query string or a form field (not a file) is the sender's 400, before
    any view can hand it to the database. JSON under /api/, plain text elsewhere."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        where = self._nul_in(request)
        if where:
            message = f"The {where} holds a NUL character (\\u0000), which no field here accepts."
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=400)
            return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
        return self.get_response(request)

    @staticmethod
    def _nul_in(request) -> str | None:
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in v for v in values):
                return f"query parameter {key.replace(chr(0), '')!r}"
        if request.method == "POST" and request.content_type in ("multipart/form-data",
                                                                  "application/x-www-form-urlencoded"):
            for key, values in request.POST.lists():
                if "\x00" in key or any("\x00" in v for v in values):
                    return f"form field {key.replace(chr(0), '')!r}"
        return None
