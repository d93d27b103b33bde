from __future__ import annotations

import math
from urllib.parse import urlencode

from django import template
from django.utils.html import format_html

register = template.Library()


@register.filter
def more_is_better(metric: str) -> bool:
    """Whether a board column sorts highest first (runner.catalogue.LOWER_IS_BETTER_METRICS)."""
    from runner.catalogue import LOWER_IS_BETTER_METRICS

    return metric not in LOWER_IS_BETTER_METRICS


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def sig(value, digits: int = 4):
    """A number shown with a few significant digits; '–' when absent."""
    if value is None or value == "":
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if not math.isfinite(number):
        return str(number)
    if number == 0 or 1e-3 <= abs(number) < 1e5:
        return f"{number:.{digits}g}" if abs(number) < 1 else f"{number:.{max(1, digits - 2)}f}".rstrip("0").rstrip(".")
    return f"{number:.{digits - 1}e}"


@register.simple_tag(takes_context=True)
def sort_link(context, page, key: str, default_desc: bool = True, label: str | None = None):
    """A column header that sorts the board by this key; clicking again flips the direction."""
    request = context["request"]
    active = page.sort == key
    desc = (not page.descending) if active else bool(default_desc)
    params = {k: v for k, v in request.GET.items() if k not in ("sort", "dir", "offset")}
    params.update({"sort": key, "dir": "desc" if desc else "asc"})
    arrow = (" ▼" if page.descending else " ▲") if active else ""
    return format_html('<a href="?{}" class="sort{}" aria-sort="{}">{}{}</a>', urlencode(params),
                       " active" if active else "",
                       ("descending" if page.descending else "ascending") if active else "none",
                       label or key, arrow)


@register.filter
def index(sequence, position):
    try:
        return sequence[int(position)]
    except (IndexError, TypeError, ValueError):
        return ""


@register.filter
def signed(value):
    """A difference with its sign: +0.012, −3.4."""
    if value is None:
        return "–"
    text = sig(abs(value))
    return ("+" if value > 0 else "−" if value < 0 else "±") + str(text)


@register.filter
def to_target(value, clock: str = "seconds"):
    """A time to target for a board cell: "not reached" for ∞, "–" when unknown (no curve to
    read it from), samples as a whole count with thousands separators, seconds with a few
    significant digits."""
    if value is None or value == "":
        return "–"
    if value == math.inf:
        return "not reached"
    return f"{value:,.0f}" if clock == "samples" else sig(value)


@register.filter
def ratio(value):
    """A performance ratio r = t / fastest t: two decimals, "∞" past the cap or never reached."""
    if value is None or value == "" or value == math.inf:
        return "∞"
    return f"{float(value):.2f}"
