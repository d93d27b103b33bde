"""`python -m runner.cli`: the `runner` command without its console script."""
from runner.cli import main

main()
