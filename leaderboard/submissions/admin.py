from django.contrib import admin, messages

from . import services
from .models import EvaluationJob, Submission


class JobInline(admin.TabularInline):
    model = EvaluationJob
    extra = 0
    fields = ["task", "state", "attempt", "runner", "progress", "error_kind", "error_message"]
    readonly_fields = fields
    can_delete = False


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "owner", "benchmark", "status", "is_baseline", "visibility", "created_at"]
    list_filter = ["status", "benchmark", "is_baseline", "visibility"]
    search_fields = ["name", "owner__username", "artifact_sha256"]
    readonly_fields = ["artifact_sha256", "artifact_size", "artifact_format", "created_at", "updated_at", "finished_at"]
    inlines = [JobInline]
    actions = ["rerun", "cancel"]

    @admin.action(description="Re-run the evaluation from scratch")
    def rerun(self, request, queryset):
        for sub in queryset:
            services.submission_rerun(submission_id=sub.pk)
        messages.success(request, f"{queryset.count()} submission(s) queued again.")

    @admin.action(description="Cancel (does not count against quota)")
    def cancel(self, request, queryset):
        for sub in queryset:
            services.submission_cancel(submission_id=sub.pk, reason="cancelled by a maintainer")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        from leaderboard.boards.services import board_entries_refresh_submission

        board_entries_refresh_submission(submission=obj)


@admin.register(EvaluationJob)
class EvaluationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "submission", "task", "state", "attempt", "dispatches", "runner", "progress",
                    "error_kind", "lease_expires_at"]
    list_filter = ["state", "error_kind", "task__queue"]
    search_fields = ["submission__name", "task__slug"]
    raw_id_fields = ["submission"]
