from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "leaderboard.accounts"
    label = "accounts"

    def ready(self):
        from . import schema  # noqa: F401  (registers the OpenAPI extension)
