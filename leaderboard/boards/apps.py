from django.apps import AppConfig


class BoardsConfig(AppConfig):
    name = "leaderboard.boards"
    label = "boards"

    def ready(self) -> None:
        # Connect the signals: the page cache's freshness (versions) and the re-ranking of ties when
        # per-image outcomes arrive after their result (services); register the site worker's
        # board tasks, which versions and services send by name from the app's registry (tasks
        # calls back into both, so they do not import it).
        from . import services, tasks, versions  # noqa: F401
