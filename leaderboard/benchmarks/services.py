"""Loading the task catalogue (shared/PROTOCOLS.md "Task catalogue", kept in runner/catalogue.py)."""
from __future__ import annotations

from typing import Any

from runner.catalogue import CATALOGUE


def catalogue_load(*, benchmark_model: Any = None, task_model: Any = None) -> tuple[int, int]:
    """Create or update every benchmark and task of the catalogue; idempotent. Returns the counts
    (benchmarks, tasks). Maintainer edits to titles and descriptions are overwritten; extra
    benchmarks are kept. ``benchmark_model`` and ``task_model``: the model classes to write
    through (a migration passes its historical ones; Any, since those are built at run time);
    None: the app's own."""
    if benchmark_model is None or task_model is None:
        from .models import Benchmark as benchmark_model  # noqa: N813
        from .models import Task as task_model
    n_tasks = 0
    for position, bench in enumerate(CATALOGUE):
        obj, _ = benchmark_model.objects.update_or_create(
            slug=bench.slug,
            defaults={
                "title": bench.title,
                "kind": bench.kind,
                "description": bench.description,
                "primary_metric": bench.primary_metric,
                "higher_is_better": bench.higher_is_better,
                "position": position,
            },
        )
        for task_position, task in enumerate(bench.tasks):
            task_model.objects.update_or_create(
                slug=task.slug,
                defaults={
                    "benchmark": obj,
                    "title": task.title,
                    "dataset": task.dataset,
                    "params": task.params,
                    "queue": task.queue,
                    "time_limit_s": task.time_limit_s,
                    "primary_metric": task.primary_metric,
                    "higher_is_better": task.higher_is_better,
                    "position": task_position,
                },
            )
            n_tasks += 1
    return len(CATALOGUE), n_tasks
