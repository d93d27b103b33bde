"""Reference submissions: ordinary source files the site submits as baselines."""
