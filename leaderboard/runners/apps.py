from django.apps import AppConfig


class RunnersConfig(AppConfig):
    name = "leaderboard.runners"
    label = "runners"
