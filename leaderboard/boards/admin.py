from django.contrib import admin

from .models import BoardEntry, ReportedResult


@admin.register(BoardEntry)
class BoardEntryAdmin(admin.ModelAdmin):
    list_display = ["task", "submission_name", "owner_name", "value", "is_baseline", "is_public", "is_synthetic_data",
                    "loop_in_sandbox"]
    list_filter = ["task", "is_baseline", "is_public", "is_synthetic_data", "loop_in_sandbox"]
    search_fields = ["submission_name", "owner_name"]
    raw_id_fields = ["submission"]


@admin.register(ReportedResult)
class ReportedResultAdmin(admin.ModelAdmin):
    list_display = ["task", "model_name", "value", "source", "paper_url", "imported_at"]
    list_filter = ["benchmark", "task"]
    search_fields = ["model_name", "paper_url", "source"]
