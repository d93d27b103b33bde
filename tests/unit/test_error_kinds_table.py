"""The one table of error kinds in docs/errors.md says what runner/spec.py decides: every kind
once, the submission's kinds ending the job and counting, the platform's retried and not counted."""
from __future__ import annotations

from pathlib import Path

import pytest

from runner.spec import (
    ALWAYS_REPEATING_KINDS,
    ERROR_KINDS,
    INFRASTRUCTURE_ERROR_KINDS,
    REPEATABLE_KINDS,
    USER_ERROR_KINDS,
    is_user_error,
)

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "errors.md"
COLUMNS = ["kind", "whose fault", "retried", "counts against the quota", "ends the other tasks", "who decides, and when",
           "what the user sees"]


def table_rows() -> dict[str, dict[str, str]]:
    lines = [line.strip() for line in TABLE.read_text().splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == COLUMNS, f"docs/errors.md's table columns changed: {header}"
    rows: dict[str, dict[str, str]] = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(COLUMNS), f"a row of docs/errors.md has {len(cells)} cells: {line}"
        kind = cells[0].strip("`")
        assert kind not in rows, f"{kind} appears twice in docs/errors.md"
        rows[kind] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def test_the_table_lists_every_error_kind_of_the_spec_once_and_no_other():
    rows = table_rows()
    missing, extra = ERROR_KINDS - set(rows), set(rows) - ERROR_KINDS
    assert not missing, f"add a row to docs/errors.md for {sorted(missing)}"
    assert not extra, f"docs/errors.md lists kinds runner/spec.py does not have: {sorted(extra)}"
    assert not USER_ERROR_KINDS & INFRASTRUCTURE_ERROR_KINDS, "a kind has exactly one owner"


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_each_row_says_whose_fault_the_kind_is_as_the_spec_decides(kind):
    row = table_rows()[kind]
    user = is_user_error(kind)
    assert row["whose fault"] == ("submission" if user else "platform")
    assert row["retried"].split()[0] == ("no" if user else "yes")
    assert row["counts against the quota"].split()[0] == ("yes" if user else "no")
    assert row["who decides, and when"] and row["what the user sees"]


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
def test_each_row_says_whether_the_kind_ends_the_other_tasks_as_the_spec_decides(kind):
    cell = table_rows()[kind]["ends the other tasks"]
    expected = "yes" if kind in ALWAYS_REPEATING_KINDS else "when" if kind in REPEATABLE_KINDS else "no"
    assert cell.split()[0].rstrip(":") == expected


def test_the_readme_and_the_operations_guide_point_to_the_table():
    assert "docs/errors.md" in (ROOT / "README.md").read_text()
    assert "errors.md" in (ROOT / "docs" / "operations.md").read_text()
