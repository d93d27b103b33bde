"""The `leaderboard` command: a researcher's client for the site's REST API (/api/v1/).

Installed with ``pip install 'leaderboard[client]'``; imports neither Django nor torch, so it
runs wherever Python and httpx do. cli.py holds the commands, api.py the HTTP client and its
retry policy, config.py the saved login, render.py how answers are printed."""

__version__ = "0.1.0"
