from django.contrib import admin, messages

from .models import RegistrationCode, RunnerNode


@admin.register(RunnerNode)
class RunnerNodeAdmin(admin.ModelAdmin):
    list_display = ["name", "pools", "device", "version", "last_heartbeat", "is_active"]
    list_filter = ["is_active"]
    readonly_fields = ["prefix", "token_hash", "last_heartbeat", "version", "device", "datasets", "created_at"]
    actions = ["rotate"]

    @admin.action(description="Issue a new token (shown once)")
    def rotate(self, request, queryset):
        for node in queryset:
            messages.warning(request, f"{node.name}: {node.rotate_token()}")

    def save_model(self, request, obj, form, change):
        if not change and not obj.token_hash:
            raw = obj.set_new_token()
            messages.warning(request, f"Token for {obj.name} (shown once): {raw}")
        super().save_model(request, obj, form, change)


@admin.register(RegistrationCode)
class RegistrationCodeAdmin(admin.ModelAdmin):
    list_display = ["note", "pools", "expires_at", "used_at", "runner"]
    readonly_fields = ["code_hash", "used_at", "runner", "created_at"]

    def save_model(self, request, obj, form, change):
        if not change:
            raw = obj.set_new_code()
            messages.warning(request, f"Registration code (shown once): {raw}  —  runner register --code {raw}")
        super().save_model(request, obj, form, change)
