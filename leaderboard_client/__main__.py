"""``python -m leaderboard_client``: the same as the `leaderboard` command."""
from leaderboard_client.cli import main

main()
