"""The runner node: evaluates submissions in a sandbox and reports to the site over HTTP.
Never imports Django; runner/spec.py is the contract with the site."""

__version__ = "0.1.0"
