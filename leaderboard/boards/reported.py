"""Reported results: published claims a maintainer imports (``manage.py import_reported FILE``),
kept apart from verified results (models.ReportedResult).

The file is JSON: a list of claims, or ``{"results": [claims]}``; each claim is an object

    {"benchmark": "cifar10", "task": "cifar10", "model": "ResNet-18",
     "paper": "https://arxiv.org/abs/1512.03385", "source": "Table 6",
     "metrics": {"top1": 93.03}}

``task`` defaults to the benchmark's lead task; ``metrics`` must hold the task's primary metric,
every value a finite number; accuracies (PERCENT_METRICS) are percentages from 0 to 100, and a
claim whose accuracies are all at most 1 is refused as fractions. A claim for the same (task, model, paper) replaces the earlier one.
Text holds no control characters (PostgreSQL cannot store NUL) and an object names each key once
(JSON lets the last of two ``"top1"`` win silently; here that is an error).
"""
from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from leaderboard.benchmarks.models import Benchmark, Task
from runner.spec import finite_float

from .models import ReportedResult
from .versions import bump

FIELDS = {"benchmark", "task", "model", "paper", "source", "metrics"}
# Accuracies are percentages (PROTOCOLS "Result keys"); a claim copied as a fraction (0.935 for
# 93.5 %) would otherwise sit 92.6 points below its verified row, so these are checked for scale
PERCENT_METRICS = frozenset({"top1", "top5", "worst_region_top1", "imagenet200_top1", "corruption_error"})
MAX_CLAIMS = 10_000


class BadReportedFile(ValueError):
    """The file cannot be imported; the message names the file, the claim and the field."""


@dataclass(frozen=True)
class Claim:
    task: Task
    model: str
    paper: str
    source: str
    metrics: dict[str, float]


def _printable_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored and shown as text (a control character such as NUL, which
    PostgreSQL refuses, or a lone surrogate, which UTF-8 cannot encode), or None."""
    for i, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs"):
            return f"character {i} is {ascii(char)}, a control character or lone surrogate"
    return None


def _text(claim: dict[str, Any], name: str, where: str, limit: int) -> str:
    value = claim.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadReportedFile(f"{where}.{name}: a non-empty string is required, got {json.dumps(value)[:60]}")
    if len(value) > limit:
        raise BadReportedFile(f"{where}.{name}: at most {limit} characters, got {len(value)}")
    problem = _printable_problem(value)
    if problem:
        raise BadReportedFile(f"{where}.{name}: {problem}")
    return value.strip()


class _DuplicateKey(ValueError):
    """A JSON object of the claims file names one key twice (json.loads would keep the last)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: an object naming a key twice is refused (not last-one-wins)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(f"the key {key[:50]!r} appears twice in one object")
        found[key] = value
    return found


def parse_claims(path: Path) -> list[Claim]:
    """The claims in the JSON file at ``path``, checked against the catalogue in the database.
    Raises BadReportedFile naming the file, the claim (``results[i]``) and the field at fault."""
    try:
        # utf-8-sig: a byte-order mark some editors write is not a reason to refuse the file
        document = json.loads(Path(path).read_text(encoding="utf-8-sig"), object_pairs_hook=_unique_keys)
    except OSError as exc:
        raise BadReportedFile(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except _DuplicateKey as exc:
        raise BadReportedFile(f"{path}: {exc}") from None
    except RecursionError:
        raise BadReportedFile(f"{path}: not JSON this command reads: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise BadReportedFile(f"{path}: not JSON: {str(exc)[:200]}") from None
    items = document.get("results") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise BadReportedFile(f"{path}: expected a list of claims or {{\"results\": [...]}}")
    if len(items) > MAX_CLAIMS:
        raise BadReportedFile(f"{path}: {len(items)} claims; at most {MAX_CLAIMS} a file")
    validate_url = URLValidator(schemes=["http", "https"])
    claims = []
    seen: dict[tuple[int, str, str], int] = {}  # (task, model, paper) → the claim's position
    for i, item in enumerate(items):
        where = f"{path}: results[{i}]"
        if not isinstance(item, dict):
            raise BadReportedFile(f"{where}: a claim must be an object, not {type(item).__name__}")
        unknown = sorted(set(item) - FIELDS)
        if unknown:
            raise BadReportedFile(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")
        slug = _text(item, "benchmark", where, 50)
        bench = Benchmark.objects.filter(slug=slug).first()
        if bench is None:
            raise BadReportedFile(f"{where}.benchmark: no benchmark {slug!r}")
        tasks = list(bench.tasks.all())
        task_slug = _text(item, "task", where, 80) if "task" in item else (tasks[0].slug if tasks else "")
        task = next((t for t in tasks if t.slug == task_slug), None)
        if task is None:
            raise BadReportedFile(f"{where}.task: benchmark {slug!r} has no task {task_slug!r} "
                                  f"(its tasks: {', '.join(t.slug for t in tasks) or 'none'})")
        model = _text(item, "model", where, 120)
        paper = _text(item, "paper", where, 500)
        try:
            validate_url(paper)
        except ValidationError:
            raise BadReportedFile(f"{where}.paper: not an http(s) URL: {paper[:80]!r}") from None
        source = _text(item, "source", where, 300)
        metrics = item.get("metrics")
        numbers: dict[str, float] = {}
        if not isinstance(metrics, dict) or not metrics:
            raise BadReportedFile(f"{where}.metrics: an object of metric name → number is required")
        if len(metrics) > 100:
            raise BadReportedFile(f"{where}.metrics: {len(metrics)} metrics; at most 100 a claim")
        for name, value in metrics.items():
            if not name or len(name) > 50 or _printable_problem(name):
                raise BadReportedFile(f"{where}.metrics: a metric name must have 1 to 50 printable characters, "
                                      f"not {ascii(name[:60])}")
            number = finite_float(value)
            if number is None:
                raise BadReportedFile(f"{where}.metrics.{name}: a finite number is required, got "
                                      f"{json.dumps(value)[:60]}")
            if name in PERCENT_METRICS and not 0 <= number <= 100:
                raise BadReportedFile(f"{where}.metrics.{name}: {number:g} is not a percentage from 0 to 100")
            numbers[name] = number
        fractions = [k for k in numbers if k in PERCENT_METRICS and 0 < numbers[k] <= 1]
        if fractions and all(numbers[k] <= 1 for k in numbers if k in PERCENT_METRICS):
            name = fractions[0]
            raise BadReportedFile(f"{where}.metrics.{name}: {numbers[name]:g} looks like a fraction; accuracies "
                                  f"are percentages here ({100 * numbers[name]:g} for {numbers[name]:g})")
        if task.primary_metric not in metrics:
            raise BadReportedFile(f"{where}.metrics: task {task.slug!r} is ranked by {task.primary_metric!r}, "
                                  f"which the claim lacks (it has {', '.join(sorted(metrics))})")
        first = seen.setdefault((task.pk, model, paper), i)
        if first != i:  # the later would replace the earlier without a word
            raise BadReportedFile(f"{where}: repeats results[{first}] (the same task, model and paper); "
                                  "keep one claim for each")
        claims.append(Claim(task, model, paper, source, numbers))
    return claims


@transaction.atomic
def import_claims(claims: list[Claim]) -> tuple[int, int]:
    """Store ``claims`` (all or none); returns (created, updated). Bumps the boards' versions."""
    created = updated = 0
    for claim in claims:
        _, new = ReportedResult.objects.update_or_create(
            task=claim.task, model_name=claim.model, paper_url=claim.paper,
            defaults={"benchmark_id": claim.task.benchmark_id, "source": claim.source,
                      "value": claim.metrics[claim.task.primary_metric], "metrics": claim.metrics})
        created, updated = created + new, updated + (not new)
    bump({c.task.benchmark_id for c in claims})
    return created, updated
