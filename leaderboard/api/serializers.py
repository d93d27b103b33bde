from __future__ import annotations

import json

from rest_framework import serializers

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.submissions.models import Submission


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = ["slug", "title", "dataset", "params", "queue", "time_limit_s", "primary_metric", "higher_is_better"]


class BenchmarkSerializer(serializers.ModelSerializer):
    tasks = TaskSerializer(many=True, read_only=True)
    warnings = serializers.SerializerMethodField(
        help_text="Read before uploading: tasks no online runner can serve now (they will wait until one "
                  "can) and tasks whose runners hold only synthetic copies of the data.")

    class Meta:
        model = Benchmark
        fields = ["slug", "title", "kind", "description", "primary_metric", "higher_is_better", "tasks", "warnings"]

    def get_warnings(self, bench: Benchmark) -> list[str]:
        """From context["warnings"] (runners.selectors.benchmark_warnings, by slug)."""
        return self.context.get("warnings", {}).get(bench.slug, [])


class JSONObjectField(serializers.JSONField):
    """Accepts a JSON object, or a string holding one (as multipart forms send it)."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            try:
                data = json.loads(data or "{}")
            except (ValueError, RecursionError) as exc:  # json raises RecursionError for deep nesting
                raise serializers.ValidationError(f"not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise serializers.ValidationError('must be a JSON object, e.g. {"lr": 0.001}')
        return data


class SubmissionCreateSerializer(serializers.Serializer):
    benchmark = serializers.SlugRelatedField(slug_field="slug", queryset=Benchmark.objects.filter(is_active=True))
    name = serializers.CharField(max_length=120)
    artifact = serializers.FileField(help_text="Optimizer .py source, or TorchScript / .pt2 / ONNX model.")
    hparams = JSONObjectField(required=False, default=dict)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    paper_url = serializers.URLField(required=False, allow_blank=True, default="")
    code_url = serializers.URLField(required=False, allow_blank=True, default="")
    model_family = serializers.CharField(required=False, allow_blank=True, default="", max_length=60)
    visibility = serializers.ChoiceField(choices=Submission.Visibility.choices, default=Submission.Visibility.PUBLIC)


LOOP_IN_SANDBOX_HELP = (
    "True when the result's training loop ran in the sandbox beside the submission (result env.loop "
    "\"sandbox\": training tasks on a GPU): the submission shared a process with the loop, its budget "
    "counters and the model, so the result is not forgery-proof (docs/submissions.md, \"Who can forge what\"). "
    "False for the runner's loop and every other track.")


class JobResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    task = serializers.CharField()
    task_title = serializers.CharField()
    primary_metric = serializers.CharField()
    higher_is_better = serializers.BooleanField()
    state = serializers.CharField()
    attempt = serializers.IntegerField()
    progress = serializers.FloatField()
    progress_message = serializers.CharField()
    runner = serializers.CharField(allow_null=True)
    error_kind = serializers.CharField()
    error_message = serializers.CharField(help_text=(
        "The whole message for the submission's owner and staff; for anyone else the one-line summary."))
    error_summary = serializers.CharField(help_text="One line, file paths replaced by <path>; shown to anyone.")
    log_tail = serializers.CharField(help_text="The end of the job's log for the owner and staff; empty for others.")
    outcome = serializers.CharField(allow_null=True, help_text=(
        'How an ended job ended: "finished", "timed out after 600 s", "failed: …", "cancelled"; null until it ends.'))
    metrics = serializers.DictField(child=serializers.FloatField())
    synthetic_data = serializers.BooleanField(help_text="Scored on a fake (synthetic) dataset.")
    loop_in_sandbox = serializers.BooleanField(help_text=LOOP_IN_SANDBOX_HELP)
    ci95 = serializers.DictField(child=serializers.ListField(child=serializers.FloatField()))
    env = serializers.DictField()
    timing = serializers.DictField()
    claimed_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    waiting_reason = serializers.CharField(allow_null=True, help_text=(
        'Why a pending or dispatched job waits, e.g. "3 jobs ahead in the gpu queue", "no runner of pool gpu '
        'online (last seen …)", "no online runner holds the ImageNet-C data (dataset imagenet-c)"; null otherwise.'))
    waiting_code = serializers.ChoiceField(
        choices=["no_runner_online", "no_runner_with_data", "jobs_ahead", "next_in_line"], allow_null=True)


class SubmissionStatusSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    benchmark = serializers.CharField()
    status = serializers.ChoiceField(choices=Submission.Status.choices)
    error_code = serializers.CharField()
    error_message = serializers.CharField(help_text=(
        "In full for the owner and staff; for anyone else each failed task's one-line summary."))
    is_baseline = serializers.BooleanField()
    artifact_format = serializers.CharField()
    artifact_sha256 = serializers.CharField()
    hparams = serializers.DictField()
    progress = serializers.FloatField()
    jobs_done = serializers.IntegerField()
    jobs_total = serializers.IntegerField()
    jobs = JobResultSerializer(many=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField(), required=False, help_text=(
        "Only when a submission is created: tasks of its benchmark that no online runner can serve now "
        "(the submission was accepted and waits until one can)."))


class LeaderboardRowSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    tied_with_above = serializers.BooleanField(help_text=(
        "95% intervals overlap the row ranked just above (the interval rule, for rows without per-image "
        "outcomes to pair)"))
    tie_rule = serializers.ChoiceField(choices=["", "paired", "interval"], help_text=(
        "Which rule says this row's order is not established: 'paired' (McNemar on per-image outcomes "
        "against its group's leader, Holm-corrected: it shares shared_rank), 'interval', or '' (none)."))
    shared_rank = serializers.IntegerField(allow_null=True, help_text="The rank the row shares under the paired rule.")
    paired = serializers.DictField(allow_null=True, help_text=(
        "The paired test against its group's leader: leader (submission id), group_size, and for the "
        "other members n, b, c, delta (points of top-1), ci, p, p_holm, m."))
    submission_id = serializers.IntegerField()
    name = serializers.CharField()
    owner = serializers.CharField()
    is_baseline = serializers.BooleanField()
    model_family = serializers.CharField()
    synthetic_data = serializers.BooleanField(help_text="Scored on a fake (synthetic) dataset.")
    loop_in_sandbox = serializers.BooleanField(help_text=LOOP_IN_SANDBOX_HELP)
    task = serializers.CharField()
    primary_metric = serializers.CharField()
    value = serializers.FloatField()
    ci95 = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    metrics = serializers.DictField(child=serializers.FloatField())
    submitted_at = serializers.DateTimeField()


class LeaderboardSerializer(serializers.Serializer):
    benchmark = serializers.CharField()
    task = serializers.CharField()
    tasks = serializers.ListField(child=serializers.CharField())
    primary_metric = serializers.CharField()
    higher_is_better = serializers.BooleanField()
    total = serializers.IntegerField()
    offset = serializers.IntegerField()
    limit = serializers.IntegerField()
    rows = LeaderboardRowSerializer(many=True)


class LeaderboardQuerySerializer(serializers.Serializer):
    """The leaderboard's query parameters; their limits are documented in the schema."""

    MAX_LIMIT = 500

    task = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                 help_text="task slug; default the benchmark's lead task")
    offset = serializers.IntegerField(required=False, default=0, min_value=0, max_value=1_000_000_000,
                                      help_text="rows to skip")
    limit = serializers.IntegerField(required=False, default=50, min_value=0, help_text=(
        f"rows per page; 0 means the default 50, and more than {MAX_LIMIT} is cut to {MAX_LIMIT}"))
    sort = serializers.RegexField(r"^[A-Za-z0-9_-]*$", required=False, allow_blank=True, default="",
                                  max_length=100, help_text="a metric key; default the primary metric")
    dir = serializers.ChoiceField(choices=["asc", "desc"], required=False, allow_blank=True, default="",
                                  help_text="default: the metric's better end first")


class LeaderboardQueryErrorsSerializer(serializers.Serializer):
    """400: a list of messages per query parameter that failed."""

    task = serializers.ListField(child=serializers.CharField(), required=False)
    offset = serializers.ListField(child=serializers.CharField(), required=False)
    limit = serializers.ListField(child=serializers.CharField(), required=False)
    sort = serializers.ListField(child=serializers.CharField(), required=False)
    dir = serializers.ListField(child=serializers.CharField(), required=False)


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class FieldErrorsSerializer(serializers.Serializer):
    """400: a list of messages per field that failed (and non_field_errors)."""

    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)
    benchmark = serializers.ListField(child=serializers.CharField(), required=False)
    name = serializers.ListField(child=serializers.CharField(), required=False)
    artifact = serializers.ListField(child=serializers.CharField(), required=False)
    hparams = serializers.ListField(child=serializers.CharField(), required=False)
