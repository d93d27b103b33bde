from django.apps import AppConfig


class BoardsConfig(AppConfig):
    name = "leaderboard.boards"
    label = "boards"

    def ready(self) -> None:
        # Connect the signals: the page cache's freshness (versions) and the re-ranking of ties when
        # per-image outcomes arrive after their result (services).
        from . import services, versions  # noqa: F401
