"""Hostile optimizer submissions, one per file: each attacks the trusted runner through what the
sandboxed child leaves or writes (read by tests/runner/test_hostile_children.py)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def source(name: str) -> bytes:
    return (HERE / f"{name}.py").read_bytes()
