"""The one way the site writes CSV. Every cell passes through :func:`spreadsheet_safe`, so a
submission named ``=HYPERLINK("http://…","click me")`` reaches a spreadsheet as text, not as a
live formula (OWASP "CSV Injection").

defusedcsv does the same job but leaves cells that start with a tab or a carriage return alone,
which spreadsheets also read as formulas after trimming; hence these few lines of our own."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from numbers import Number
from typing import Any

from django.http import HttpResponse

# A spreadsheet reads a cell that starts with one of these as a formula (tab and carriage return
# because some trim them first and then see the character after).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet evaluates: a string starting with a formula
    trigger gets a leading apostrophe (spreadsheets show it as text and hide the apostrophe).
    Numbers (a genuinely negative metric included), booleans and None pass unchanged, so numeric
    columns stay numeric."""
    if value is None or isinstance(value, Number):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable[Any]]) -> HttpResponse:
    """An attachment ``filename`` holding ``header`` and ``rows``, every cell spreadsheet-safe
    (the header too: metric names come from results)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([spreadsheet_safe(cell) for cell in header])
    writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
