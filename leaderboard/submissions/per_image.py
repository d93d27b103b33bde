"""A job's per-image outcomes, as the site stores them (issue 17 item 1): the ``.npz`` a runner
uploads after the result it belongs to (``POST /api/runner/v1/jobs/<id>/per-image/``,
leaderboard/runners/views.py), kept in ``EvaluationJob.per_image``. What the arrays mean (names,
dtypes, units, the order of images) is runner/metrics/per_image.py's docstring; this module only
reads a stored file back, checked again and never unpickled. numpy only: the site never imports
torch.
"""
from __future__ import annotations

from typing import IO, cast

import numpy as np

from runner.per_image_file import PerImageError, read_per_image

from .models import EvaluationJob

__all__ = ["PerImageError", "expected_images", "load_per_image"]


def expected_images(job: EvaluationJob) -> int | None:
    """The number of images the job's result says its per-image file holds (``files.per_image.n``),
    or None when the result names no such file."""
    result = job.result if isinstance(job.result, dict) else {}
    files = result.get("files")
    entry = files.get("per_image") if isinstance(files, dict) else None
    n = entry.get("n") if isinstance(entry, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def load_per_image(job: EvaluationJob) -> dict[str, np.ndarray] | None:
    """The per-image arrays of ``job`` by name, each 1-D of length N (the task's images in its
    fixed order): ``index``, ``label``, ``pred`` (int64), ``top5_hit`` (bool), ``loss`` (nats) and
    ``el2n`` (float64), plus the task's group keys (``corruption`` and ``severity``, ``region``,
    ``income_group``, ``part``). None when the job has no stored file (not a classifier task, the
    runner has not uploaded it yet, or an older result). Raises PerImageError (a ValueError) if
    the stored file no longer reads as one, OSError if the storage cannot open it."""
    if not job.per_image:
        return None
    with job.per_image.open("rb") as fh:
        return read_per_image(cast(IO[bytes], fh), slug=job.task.slug, expected_n=expected_images(job))
