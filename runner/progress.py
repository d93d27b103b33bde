"""How long-running work tells its caller how far it has got: the two shapes of progress callback
the runner passes around (imported by the tracks, the datasets, `runner data` and the benches).

- :data:`Progress` ``(fraction, message)``: ``fraction`` of the work done, 0.0 to 1.0, and a short
  message a person reads (a job's heartbeat carries both to the site; `runner data` draws a bar).
- :data:`ProgressLine` ``(line)``: one line of text for a person, where no fraction is known (the
  benchmarks' step-by-step narration).
"""
from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]
ProgressLine = Callable[[str], None]


def no_progress(fraction: float, message: str) -> None:
    """The :data:`Progress` of callers that do not watch: it ignores every report."""
