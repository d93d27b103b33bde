from django.apps import AppConfig


class BoardsConfig(AppConfig):
    name = "leaderboard.boards"
    label = "boards"

    def ready(self) -> None:
        from . import cache  # noqa: F401 - connects the signals that keep the page cache fresh
