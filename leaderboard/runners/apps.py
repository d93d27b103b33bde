from django.apps import AppConfig


class RunnersConfig(AppConfig):
    name = "leaderboard.runners"
    label = "runners"

    def ready(self) -> None:
        from leaderboard import checks  # noqa: F401  registers the settings' system checks
