from __future__ import annotations

from django.db import models

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.submissions.models import Submission


class BoardEntry(models.Model):
    """A materialized leaderboard row: one per (task, submission) with a result. Pages read these
    rows alone, so their number of queries does not grow with the number of submissions."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="board_entries")
    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="board_entries")
    submission = models.ForeignKey(Submission, on_delete=models.CASCADE, related_name="board_entries")
    value = models.FloatField(help_text="The task's primary metric.")
    ci_low = models.FloatField(null=True, blank=True)
    ci_high = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict)
    ci95 = models.JSONField(default=dict)
    submission_name = models.CharField(max_length=120)
    owner_name = models.CharField(max_length=150)
    model_family = models.CharField(max_length=60, blank=True)
    is_baseline = models.BooleanField(default=False)
    is_public = models.BooleanField(default=True)
    is_synthetic_data = models.BooleanField(default=False, help_text="Scored on a fake (synthetic) dataset.")
    loop_in_sandbox = models.BooleanField(default=False, help_text=(
        "The training loop ran in the sandbox beside the submission (a GPU training task): not forgery-proof."))
    parameters = models.BigIntegerField(null=True, blank=True, help_text="Model parameters, when recorded.")
    throughput = models.FloatField(null=True, blank=True, help_text=(
        "Images per second over the whole evaluation (the result's timing.items_per_s), when recorded."))
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True, help_text=(
        "Peak memory of the sandboxed model server (env.memory.peak_bytes; env.memory.source says how it "
        "was measured), when recorded."))
    memory_limit_bytes = models.BigIntegerField(null=True, blank=True, help_text=(
        "The memory the model server could use (env.memory.limit_bytes): Dynascore's memory offset."))
    submitted_at = models.DateTimeField()
    tie_rank = models.PositiveIntegerField(null=True, blank=True, help_text=(
        "The rank this row shares under the paired tie rule (leaderboard/boards/paired.py) among the "
        "task's public rows with per-image outcomes: its group leader's position (1: tied with the "
        "leader); null where the rule had no outcomes for it. Written by board_ties_refresh."))
    paired = models.JSONField(default=dict, blank=True, help_text=(
        "The paired test against the row's group leader: leader (submission id), group_size, and for "
        "the other members n, b, c, delta (points of top-1), ci, p, p_holm, m."))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "submission"], name="one_entry_per_task")]
        indexes = [models.Index(fields=["task", "is_public", "value"])]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.submission_name} = {self.value}"


class ReportedResult(models.Model):
    """A published claim a maintainer imported (``manage.py import_reported``): never verified by
    a runner, so pages show it apart from the verified rows and rank it only when a reader asks."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="reported_results")
    benchmark = models.ForeignKey(Benchmark, on_delete=models.CASCADE, related_name="reported_results")
    model_name = models.CharField(max_length=120, help_text=(
        "The model as the paper names it; a public verified row of the same name (any case) is compared."))
    paper_url = models.URLField(max_length=500)
    source = models.CharField(max_length=300, help_text="Where in the paper, e.g. 'Table 2'.")
    value = models.FloatField(help_text="The claimed value of the task's primary metric.")
    metrics = models.JSONField(default=dict, help_text="Every claimed metric, by the task's metric names.")
    imported_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "model_name", "paper_url"],
                                               name="one_claim_per_task_model_paper")]
        ordering = ["task", "-value"]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.model_name} (reported) = {self.value}"
