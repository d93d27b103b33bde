"""Paired tests on the compare page (issue 17 item 2; PROTOCOLS, "Paired comparison of two
classifiers"): every submission after the first is tested against the first, task by task, on the
images both were scored on, from the per-image outcomes the runner stored with each result."""
from __future__ import annotations

from dataclasses import dataclass

from leaderboard.submissions.models import EvaluationJob, OutcomeVectors, Submission
from leaderboard.submissions.per_image import outcome_vectors, right, same_images, set_codes

from . import paired


@dataclass(frozen=True)
class PairedLine:
    """One submission against the reference (the first compared) on one task: ``test`` (None when
    there is none, and ``missing`` says why), and ``p_holm``, McNemar's p Holm-adjusted over the
    ``m`` tasks on which this pair was tested."""

    submission_id: int
    name: str
    test: paired.PairedTest | None = None
    p_holm: float | None = None
    m: int = 0
    missing: str = ""

    @property
    def separated(self) -> bool:
        return self.p_holm is not None and self.p_holm < paired.ALPHA


def paired_tests(*, submissions: list[Submission]) -> dict[str, list[PairedLine]]:
    """{task slug: one PairedLine per submission after the first} for every classifier task on
    which any of ``submissions`` has a succeeded result. Δ and its interval are in points of
    top-1 accuracy, the other submission minus the reference.

    1. One query reads the succeeded classifier jobs, one their compact outcome vectors
       (per_image.outcome_vectors: a job's file is read only the first time, and never again).
    2. Per task and pair, the two jobs' vectors are checked to hold the same images
       (per_image.same_images) and tested (paired.paired_test: McNemar, b, c, the paired
       bootstrap interval, resampling within the reference's sets).
    3. Per pair, Holm's correction runs over the tasks on which it was tested.
    A task where either side lacks per-image outcomes (an older result, a file not uploaded yet,
    a file that no longer reads) or the two files hold different images gets a line saying so."""
    if len(submissions) < 2:
        return {}
    reference, others = submissions[0], submissions[1:]
    jobs = list(EvaluationJob.objects.filter(submission_id__in=[s.pk for s in submissions],
                                             state=EvaluationJob.State.SUCCEEDED,
                                             task__benchmark__kind="classifier")
                .select_related("task").order_by("task__position", "task__slug"))
    by_task: dict[str, dict[int, EvaluationJob]] = {}
    for job in jobs:
        by_task.setdefault(job.task.slug, {})[job.submission_id] = job
    found, problems = outcome_vectors(jobs, fields=("hits", "sets"))

    def load(job: EvaluationJob | None, name: str) -> OutcomeVectors | str:
        """The job's vectors, or why there are none."""
        if job is None:
            return f"{name} has no result on this task"
        if job.pk in problems:
            return f"{name}'s per-image outcomes could not be read ({problems[job.pk]})"
        return found.get(job.pk) or (
            f"{name} has no per-image outcomes on this task (a result from before the runner "
            "recorded them, or the file is not uploaded yet)")

    lines: dict[str, list[PairedLine]] = {}
    for slug, task_jobs in by_task.items():
        ref = load(task_jobs.get(reference.pk), reference.name)
        row = []
        for other in others:
            if isinstance(ref, str):
                row.append(PairedLine(other.pk, other.name, missing=ref))
                continue
            mine = load(task_jobs.get(other.pk), other.name)
            if isinstance(mine, str):
                row.append(PairedLine(other.pk, other.name, missing=mine))
                continue
            try:
                same_images(mine, ref)
            except ValueError as exc:
                row.append(PairedLine(other.pk, other.name, missing=f"not comparable: {exc}"))
                continue
            row.append(PairedLine(other.pk, other.name, test=paired.paired_test(right(mine), right(ref),
                                                                               sets=set_codes(ref))))
        lines[slug] = row
    for position in range(len(others)):
        tested = [(slug, row[position]) for slug, row in lines.items() if row[position].test is not None]
        adjusted = paired.holm([line.test.p for _, line in tested if line.test is not None])
        for (slug, line), p_holm in zip(tested, adjusted, strict=True):
            lines[slug][position] = PairedLine(line.submission_id, line.name, line.test, p_holm, len(tested))
    return lines
