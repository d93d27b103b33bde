"""What moving the paired tie rule to the site worker and caching per-job outcome vectors saved:
one classifier task filled with ``--rows`` public results, each with a ``--images``-image per-image
file written by the runner's own writer (runner.per_image_file.write_per_image; synthetic arrays,
1,000 classes as on ImageNet's validation set), then, best of ``--repeats``, the wall time of

- saving one more result: before, the row's write plus the synchronous tie refresh that read every
  row's file (the code this replaced, copied below as ``old_board_ties_refresh``); after, the row's
  write alone (the refresh is sent after the commit);
- the site worker's refresh now (vectors built), with McNemar in exact integers as before
  (paired.mcnemar_exact now sums large tails in floating point), and the one-time build of every
  row's vectors;
- the compare page of two of them (``/compare/``): before with the old paired_tests (two files
  read, aligned and tested), after with the vectors;
- the hardest-images summary with its cache empty: before with the old load_field (every file
  read), after from the vectors.

    DATABASE_URL=postgres://... .venv/bin/python tests/bench/bench_ties.py [--rows 30] [--images 50000]

It runs in a test database of its own (created and dropped: the database in DATABASE_URL is
not touched) and prints a Markdown table with the ratios; docs/paired-tests.md records one run.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def best(call: Callable[[], object], repeats: int) -> float:
    """The least wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


# --------------------------------------------------------------------------------------------
# The code this replaced (leaderboard/boards/services.py, compare.py, difficulty.py and
# paired.mcnemar_exact at e01d9b0), reading whole files, kept here to measure it against the new
# path. "Before" figures run with the old exact McNemar.
# --------------------------------------------------------------------------------------------
def old_mcnemar_exact(b: int, c: int) -> float:
    """McNemar in exact integers at any n, as paired.mcnemar_exact was at e01d9b0."""
    n, k_max = b + c, min(b, c)
    if n == 0 or 2 * k_max >= n:
        return 1.0
    term = total = 1
    for k in range(k_max):
        term = term * (n - k) // (k + 1)
        total += term
    return min(1.0, 2 * total / 2**n)


def old_code(call: Callable[[], object]) -> Callable[[], object]:
    """``call`` with the old exact McNemar in place of the new one."""
    from leaderboard.boards import paired

    def run() -> object:
        new, paired.mcnemar_exact = paired.mcnemar_exact, old_mcnemar_exact
        try:
            return call()
        finally:
            paired.mcnemar_exact = new

    return run


def old_board_ties_refresh(task) -> int:
    from leaderboard.boards import paired
    from leaderboard.boards.models import BoardEntry
    from leaderboard.submissions.models import EvaluationJob
    from leaderboard.submissions.per_image import load_per_image

    entries = list(BoardEntry.objects.filter(task=task, is_public=True).order_by("-value", "pk"))
    before = {entry.pk: (entry.tie_rank, entry.paired) for entry in entries}
    members, rights, sets = [], [], None
    jobs = {
        job.submission_id: job
        for job in EvaluationJob.objects.filter(
            task=task, submission_id__in=[e.submission_id for e in entries]
        )
        .exclude(per_image="")
        .select_related("task")
    }
    reference = None
    for entry in entries:
        arrays = load_per_image(jobs[entry.submission_id])
        reference = arrays if reference is None else reference
        pair = paired.align(arrays, reference)
        members.append(entry)
        rights.append(pair.right_a)
        sets = pair.sets
    marks = paired.tie_groups(rights, sets=sets)
    for entry, mark in zip(members, marks, strict=True):
        entry.tie_rank = mark.shared_rank
        entry.paired = {"leader": members[mark.leader].submission_id, "group_size": mark.group_size}
        if mark.test is not None:
            t = mark.test
            entry.paired.update(
                n=t.n_images, b=t.b, c=t.c, delta=t.delta, ci=list(t.ci), p=t.p, p_holm=mark.p_holm, m=mark.m
            )
    changed = [entry for entry in entries if before[entry.pk] != (entry.tie_rank, entry.paired)]
    BoardEntry.objects.bulk_update(changed, ["tie_rank", "paired"])
    return len(members)


def old_paired_tests(*, submissions):
    from leaderboard.boards import paired
    from leaderboard.boards.compare import PairedLine
    from leaderboard.submissions.models import EvaluationJob
    from leaderboard.submissions.per_image import load_per_image

    reference, others = submissions[0], submissions[1:]
    jobs = EvaluationJob.objects.filter(submission_id__in=[s.pk for s in submissions]).select_related("task")
    by_task: dict[str, dict] = {}
    for job in jobs:
        by_task.setdefault(job.task.slug, {})[job.submission_id] = job
    lines = {}
    for slug, task_jobs in by_task.items():
        ref = load_per_image(task_jobs[reference.pk])
        row = []
        for other in others:
            pair = paired.align(load_per_image(task_jobs[other.pk]), ref)
            test = paired.paired_test(pair.right_a, pair.right_b, sets=pair.sets)
            row.append(PairedLine(other.pk, other.name, test=test))
        lines[slug] = row
    for position in range(len(others)):
        adjusted = paired.holm([row[position].test.p for row in lines.values()])
        for (slug, row), p_holm in zip(lines.items(), adjusted, strict=True):
            line = row[position]
            lines[slug][position] = PairedLine(line.submission_id, line.name, line.test, p_holm, len(lines))
    return lines


def old_load_field(task, entries, jobs):
    from leaderboard.boards import difficulty, paired
    from leaderboard.submissions.per_image import load_per_image

    el2n, right, members, total, keys, reference = [], [], [], None, None, None
    for entry in entries:
        arrays = load_per_image(jobs[entry.submission_id])
        if reference is not None:
            paired.align(arrays, reference)
        reference = arrays if reference is None else reference
        rows = np.arange(len(arrays["index"]))
        names = [k for k in paired.IMAGE_KEYS if k in arrays and k != "part"]
        columns = {k: arrays[k][rows] for k in (*names, "label", "pred", "el2n") if k in arrays}
        order = np.lexsort([columns[k] for k in reversed(names)])
        columns = {k: v[order] for k, v in columns.items()}
        if keys is None:
            keys = {k: v for k, v in columns.items() if k not in ("pred", "el2n")}
        members.append((entry.submission_id, entry.submission_name, entry.value))
        total = columns["el2n"].astype(np.float64) if total is None else total + columns["el2n"]
        el2n.append(columns["el2n"].astype(np.float32))
        right.append(columns["pred"] == columns["label"])
    return difficulty.Field(members, keys, total / len(members), np.vstack(el2n), np.vstack(right))


# --------------------------------------------------------------------------------------------
def fill(rows: int, images: int, folder: Path):
    """``rows`` public results on imagenet-val, each with its per-image file stored; returns the
    task and the submissions, best first."""
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from django.core.management import call_command

    from leaderboard.benchmarks.models import Task
    from leaderboard.boards.services import board_entry_upsert
    from leaderboard.submissions.models import EvaluationJob, Submission
    from runner.per_image_file import write_per_image

    call_command("loadbenchmarks", verbosity=0)
    owner = get_user_model().objects.create_user("bench")
    task = Task.objects.select_related("benchmark").get(slug="imagenet-val")
    rng = np.random.default_rng(0)
    label = rng.integers(0, 1000, images)
    subs = []
    for i in range(rows):
        wrong = rng.uniform(size=images) < 0.20 + 0.002 * i  # close accuracies: many ties to test
        pred = np.where(wrong, (label + 1 + i) % 1000, label)
        el2n = np.clip(np.where(wrong, 1.0, 0.2) + rng.normal(0, 0.1, images), 0, np.sqrt(2))
        arrays = {
            "index": np.arange(images),
            "label": label,
            "pred": pred,
            "top5_hit": ~wrong | (rng.uniform(size=images) < 0.5),
            "loss": -np.log(np.clip(1.0 - el2n / np.sqrt(2), 1e-6, 1.0)),
            "el2n": el2n,
        }
        order = rng.permutation(images)  # every runner lists images in its own order
        path = folder / f"r{i}.per_image.npz"
        entry = write_per_image(path, {k: v[order] for k, v in arrays.items()})
        sub = Submission.objects.create(
            owner=owner,
            benchmark=task.benchmark,
            name=f"net-{i:02d}",
            artifact=f"x/{i}.pt2",
            artifact_name="m.pt2",
            artifact_sha256="0" * 64,
            artifact_size=1,
            status=Submission.Status.FINISHED,
            visibility=Submission.Visibility.PUBLIC,
        )
        top1 = 100.0 * float(np.mean(~wrong))
        job = EvaluationJob.objects.create(
            submission=sub,
            task=task,
            state=EvaluationJob.State.SUCCEEDED,
            result_attempt=1,
            result={
                "metrics": {"top1": top1},
                "ci95": {"top1": [top1 - 0.4, top1 + 0.4]},
                "files": {"per_image": entry},
            },
        )
        with path.open("rb") as fh:
            job.per_image.save("per_image.npz", File(fh), save=False)
        job.save(update_fields=["per_image"])
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        board_entry_upsert(job=job, submission=sub)
        subs.append(sub)
    subs.sort(key=lambda s: -s.board_entries.get().value)
    return task, subs


def measure(rows: int, images: int, repeats: int) -> None:
    from django.db import transaction
    from django.test import Client

    from leaderboard.boards import difficulty, services, tasks, views
    from leaderboard.boards.models import BoardEntry
    from leaderboard.submissions.models import EvaluationJob, OutcomeVectors
    from leaderboard.submissions.per_image import outcome_vectors

    sent: list[object] = []  # the messages the commits send; the worker's refresh is timed apart
    tasks.refresh_ties.delay = lambda ids: sent.append(ids)  # type: ignore[method-assign]
    tasks.warm_boards.delay = lambda ids: sent.append(ids)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        task, subs = fill(rows, images, Path(folder))
        print(f"filled {rows} rows of {images:,} images in {time.perf_counter() - started:.1f} s")
    jobs = list(EvaluationJob.objects.filter(task=task).select_related("task"))
    file_bytes = statistics.mean(job.per_image.size for job in jobs)
    OutcomeVectors.objects.all().delete()
    build = best(lambda: outcome_vectors(jobs), 1)  # every row's file read and compacted, once
    vec_bytes = statistics.mean(
        sum(len(getattr(v, f)) for f in ("hits", "sets", "el2n", "thumbs", "detail"))
        for v in OutcomeVectors.objects.all()
    )
    last, last_job = subs[-1], EvaluationJob.objects.select_related("task").get(submission=subs[-1])

    def save_before():
        with transaction.atomic():
            services.board_entry_upsert(job=last_job, submission=last)
            old_board_ties_refresh(task)

    def save_after():
        with transaction.atomic():
            services.board_entry_upsert(job=last_job, submission=last)

    results = [
        (
            "saving one result (the result's transaction)",
            best(old_code(save_before), repeats),
            best(save_after, repeats),
        ),
    ]
    refresh = best(lambda: services.board_ties_refresh(task=task), repeats)
    refresh_exact = best(old_code(lambda: services.board_ties_refresh(task=task)), 1)
    covered = BoardEntry.objects.filter(task=task).exclude(tie_rank=None).count()
    client = Client()
    url = f"/compare/?ids={subs[0].pk},{subs[1].pk}"
    assert client.get(url).status_code == 200
    compare_after = best(lambda: client.get(url), repeats)
    views.paired_tests = old_paired_tests
    compare_before = best(old_code(lambda: client.get(url)), repeats)
    results.append(("compare page, two submissions", compare_before, compare_after))
    entries = difficulty._entries(task)
    with_files = difficulty._jobs(task, entries)
    results.append(
        (
            "hardest-images field (cache empty)",
            best(lambda: old_load_field(task, entries, with_files), repeats),
            best(lambda: difficulty.load_field(task, entries, with_files), repeats),
        )
    )
    print(
        f"\nper-image file {file_bytes / 1e6:.2f} MB, its vectors {vec_bytes / 1e6:.2f} MB; best of {repeats}\n"
    )
    print("| step | before | after | before / after |")
    print("| --- | --- | --- | --- |")
    for name, before, after in results:
        print(f"| {name} | {before * 1e3:,.0f} ms | {after * 1e3:,.1f} ms | {before / after:,.0f}× |")
    print(
        f"| the site worker's tie refresh ({covered} rows tied or ranked) | (in the result's transaction) | {refresh * 1e3:,.0f} ms | |"
    )
    print(f"| the same refresh with the old exact-integer McNemar | | {refresh_exact * 1e3:,.0f} ms | |")
    print(f"| building every row's vectors, once | | {build * 1e3:,.0f} ms | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leaderboard.settings")
    import django
    from django.conf import settings
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    django.setup()
    logging.getLogger("celery").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as media:
        settings.MEDIA_ROOT = media
        setup_test_environment()
        names = setup_databases(verbosity=0, interactive=False)
        try:
            measure(args.rows, args.images, args.repeats)
        finally:
            teardown_databases(names, verbosity=0)


if __name__ == "__main__":
    main()
