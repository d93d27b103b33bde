"""The one way the site writes CSV. Every cell passes through :func:`spreadsheet_safe`, so a
submission named ``=HYPERLINK("http://…","click me")`` reaches a spreadsheet as text, not as a
live formula (OWASP "CSV Injection").

defusedcsv does the same job but leaves cells that start with a tab or a carriage return alone,
which spreadsheets also read as formulas after trimming; hence these few lines of our own.

Board exports stream (:func:`csv_stream`, :func:`json_stream`): rows are formatted as the client
reads them, and the bytes equal what :func:`csv_response` and Django's ``JsonResponse`` build."""
from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from numbers import Number
from typing import Any, TypeVar

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase

# A spreadsheet reads a cell that starts with one of these as a formula (tab and carriage return
# because some trim them first and then see the character after).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CSV_TYPE = "text/csv; charset=utf-8"
R = TypeVar("R", bound=HttpResponseBase)
CHUNK_CHARS = 64 * 1024


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet evaluates: a string starting with a formula
    trigger gets a leading apostrophe (spreadsheets show it as text and hide the apostrophe).
    Numbers (a genuinely negative metric included), booleans and None pass unchanged, so numeric
    columns stay numeric."""
    if value is None or isinstance(value, Number):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


class _Line:
    """A file-like object whose ``write`` hands back what it was given, so ``csv.writer`` formats
    one row at a time without a buffer (the pattern of Django's "Streaming large CSV files")."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """``header`` then ``rows`` as CSV lines (``\r\n``-terminated, as ``csv.writer`` writes them),
    every cell spreadsheet-safe (the header too: metric names come from results)."""
    writer = csv.writer(_Line())
    yield writer.writerow([spreadsheet_safe(cell) for cell in header])
    for row in rows:
        yield writer.writerow([spreadsheet_safe(cell) for cell in row])


def _chunked(parts: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[bytes]:
    """``parts`` joined into UTF-8 chunks of about ``size`` characters: one write per chunk, not
    per row or JSON token."""
    buffer: list[str] = []
    length = 0
    for part in parts:
        buffer.append(part)
        length += len(part)
        if length >= size:
            yield "".join(buffer).encode()
            buffer, length = [], 0
    if buffer:
        yield "".join(buffer).encode()


def _attachment(response: R, filename: str) -> R:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable[Any]]) -> HttpResponse:
    """An attachment ``filename`` holding ``header`` and ``rows``, every cell spreadsheet-safe,
    built in memory (small documents: one submission's results)."""
    return _attachment(HttpResponse("".join(csv_lines(header, rows)), content_type=CSV_TYPE), filename)


def csv_stream(filename: str, header: list[str], rows: Iterable[Iterable[Any]]) -> StreamingHttpResponse:
    """The same attachment as :func:`csv_response`, byte for byte, streamed: rows are formatted as
    the client reads them (``rows`` may be a generator), in chunks of about 64 k characters."""
    return _attachment(StreamingHttpResponse(_chunked(csv_lines(header, rows)), content_type=CSV_TYPE), filename)


def json_stream(data: Any, *, indent: int | None = 1) -> StreamingHttpResponse:
    """``data`` as JSON, byte for byte what ``JsonResponse(data, json_dumps_params={"indent":
    indent})`` holds, streamed: ``json``'s own ``iterencode`` with Django's encoder (dates,
    decimals), in chunks of about 64 k characters."""
    parts = DjangoJSONEncoder(indent=indent).iterencode(data)
    return StreamingHttpResponse(_chunked(parts), content_type="application/json")
