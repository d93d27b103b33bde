from django.contrib import admin

from .models import Benchmark, Task


class TaskInline(admin.TabularInline):
    model = Task
    extra = 0
    fields = ["slug", "title", "dataset", "queue", "time_limit_s", "primary_metric", "higher_is_better", "position"]


@admin.register(Benchmark)
class BenchmarkAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "kind", "primary_metric", "higher_is_better", "is_active", "position"]
    list_filter = ["kind", "is_active"]
    list_editable = ["is_active", "position"]
    search_fields = ["slug", "title"]
    inlines = [TaskInline]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["slug", "benchmark", "dataset", "queue", "time_limit_s", "primary_metric"]
    list_filter = ["benchmark", "queue"]
    search_fields = ["slug", "title", "dataset"]
