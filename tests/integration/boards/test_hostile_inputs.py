"""Hostile and mistaken input against the pages and commands of issues 17 and 19: a maintainer's
claims file written by a careless script or copied from an untrusted source, and query strings
a visitor edits by hand. Each answers a clear error naming the input (a 400 or 404 on a page,
a CommandError naming the file, claim and field), never a traceback, and never shows anyone's
private results."""
from __future__ import annotations

import json
import re

import pytest
from django.core.management import CommandError, call_command

from leaderboard.boards.models import ReportedResult

from .test_difficulty import scored
from .test_saliency_overlays import mapped_rows, saliency_entry, with_saliency
from .test_weighted_and_reported import CLAIM, measured

pytestmark = pytest.mark.django_db


def _claims_file(tmp_path, text: str) -> str:
    path = tmp_path / "claims.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _one(**fields) -> str:
    return json.dumps([{**CLAIM, **fields}])


@pytest.mark.parametrize(("text", "message"), [
    # an integer too large for a float (math.isfinite raised OverflowError on it)
    (_one(metrics={"top1": 10 ** 400}), r"results\[0\]\.metrics\.top1: a finite number is required"),
    # over Python's 4300-digit limit for int(): json raises a plain ValueError
    ('[{"metrics": {"top1": ' + "9" * 5000 + "}}]", r"claims\.json: not JSON: Exceeds the limit"),
    ("[" * 100_000 + "]" * 100_000, r"claims\.json: not JSON this command reads: nested too deeply"),
    # PostgreSQL cannot store NUL in text or jsonb (DataError at the insert before)
    (_one(model="Net\u0000"), r"results\[0\]\.model: character 3 is '\\x00'"),
    (_one(source="\u0000Table 2"), r"results\[0\]\.source: character 0 is '\\x00'"),
    (_one(metrics={"top1": 90.0, "x\u0000": 1.0}), r"results\[0\]\.metrics: a metric name must have 1 to 50 printable"),
    # a lone surrogate cannot be encoded as UTF-8 (UnicodeEncodeError at the insert before)
    (_one(model="\ud800"), r"results\[0\]\.model: character 0 is '\\ud800'"),
    # two values for one metric: json.loads kept the last silently
    ('[{"benchmark": "digits", "model": "M", "paper": "https://a.org/", "source": "s", '
     '"metrics": {"top1": 99.0, "top1": 1.0}}]', r"claims\.json: the key 'top1' appears twice in one object"),
    (_one(metrics={"top1": float("nan")}), r"results\[0\]\.metrics\.top1: a finite number is required, got NaN"),
    (_one(metrics={"top1": float("inf")}), r"results\[0\]\.metrics\.top1: a finite number is required, got Infinity"),
    (_one(metrics={"top1": 1e308}), r"results\[0\]\.metrics\.top1: 1e\+308 is not a percentage from 0 to 100"),
    (_one(metrics={"top1": -3}), r"results\[0\]\.metrics\.top1: -3 is not a percentage"),
    # a tired copy from a paper's table of fractions
    (_one(metrics={"top1": 0.935, "top5": 0.99}), r"results\[0\]\.metrics\.top1: 0\.935 looks like a fraction; "
                                                   r"accuracies are percentages here \(93\.5 for 0\.935\)"),
])
def test_a_hostile_claims_file_is_refused_naming_what_is_wrong(catalogue, tmp_path, text, message):
    with pytest.raises(CommandError, match=message):
        call_command("import_reported", _claims_file(tmp_path, text))
    assert not ReportedResult.objects.exists()


def test_the_same_claim_twice_in_one_file_is_refused_naming_both(catalogue, tmp_path):
    text = json.dumps([CLAIM, {**CLAIM, "model": "other"}, {**CLAIM, "metrics": {"top1": 12.0}}])
    with pytest.raises(CommandError, match=r"results\[2\]: repeats results\[0\] \(the same task, model and paper\)"):
        call_command("import_reported", _claims_file(tmp_path, text))
    assert not ReportedResult.objects.exists()


def test_a_file_saved_with_a_byte_order_mark_is_read(catalogue, tmp_path):
    call_command("import_reported", _claims_file(tmp_path, "\ufeff" + json.dumps([CLAIM])))
    assert ReportedResult.objects.get().model_name == CLAIM["model"]


def test_markup_in_a_claims_names_is_shown_as_text_on_the_board_and_the_weighted_page(client, alice, tmp_path):
    measured(alice, "verified-net", 80, throughput=100, peak_gib=2)
    name = "</script><script>alert(1)</script><b>Net</b>"
    call_command("import_reported", _claims_file(tmp_path, _one(model=name)))
    for url in ("/b/digits/", "/b/digits/weighted/", "/b/digits/weighted/?reported=ranked"):
        html = client.get(url).content.decode()
        assert "<script>alert(1)" not in html and "<b>Net" not in html, url
        assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;Net&lt;/b&gt;" in html, url
    # the weighted page's embedded data (json_script) escapes < so the name cannot close the element
    ranked = client.get("/b/digits/weighted/?reported=ranked").content.decode()
    data = re.search(r'<script id="weighted-data" type="application/json">(.*?)</script>', ranked, re.S)
    assert data is not None and name in json.dumps(json.loads(data.group(1)), ensure_ascii=False)


@pytest.mark.parametrize("damage", [{"seconds": 10 ** 400}, {"budget_s": 10 ** 400}, {"rows": [10 ** 400]}])
def test_a_saliency_entry_with_an_integer_too_large_for_a_float_shows_no_maps_not_an_error(client, alice, damage):
    sub = scored(alice, "net-1", 1)
    entry, _ = saliency_entry(mapped_rows())
    with_saliency(sub, {**entry, **damage})
    response = client.get(f"/s/{sub.pk}/failures/digits/")
    assert response.status_code == 200
    assert 'id="no-saliency"' in response.content.decode()
    assert client.get(f"/s/{sub.pk}/saliency/{sub.jobs.get().pk}/0.png").status_code == 404


@pytest.mark.parametrize(("query", "message"), [
    ("ids=a,b", "&#x27;a&#x27; is not a submission number"),
    ("ids={a},%EF%BC%97", "&#x27;７&#x27; is not a submission number"),  # a fullwidth 7: int() took it
    ("ids={a},-1", "&#x27;-1&#x27; is not a submission number"),
    ("ids={a},{a}", "A submission is listed twice"),
    ("ids=" + ",".join(str(i) for i in range(1, 5001)), "5000 submissions given"),
    ("ids={a}," + "9" * 5000, "is not a submission number"),
    ("ids={a},{other}", "different benchmarks"),
])
def test_a_mistaken_compare_address_is_a_400_saying_what_is_wrong(client, alice, query, message):
    a = scored(alice, "net-1", 1)
    other = measured(alice, "other", 50, throughput=1, peak_gib=1, task_slug="cifar10")
    response = client.get("/compare/?" + query.format(a=a.pk, other=other.pk))
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert 'name="ids" value="' in html  # the form is there to correct it


def test_compare_takes_repeated_ids_and_shows_no_private_submission_of_another(client, alice, bob):
    a, b = scored(alice, "net-a", 1), scored(alice, "net-b", 2)
    hidden = scored(bob, "bobs-secret", 3, public=False)
    assert client.get("/compare/").status_code == 200  # the empty form
    html = client.get(f"/compare/?ids={a.pk}&ids={b.pk}").content.decode()
    assert "net-a" in html and "net-b" in html
    response = client.get(f"/compare/?ids={a.pk},{hidden.pk}")
    assert response.status_code == 404 and "bobs-secret" not in response.content.decode()


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e309", "1e0", "-1", "5.5", "1_0", " 3", "%EF%BC%91", "0x1",
                                 "%00", "1" * 5000, "", "2.5"])
def test_a_weight_is_a_plain_decimal_from_0_to_5_or_a_400_naming_it(client, alice, raw):
    measured(alice, "net-a", 70, throughput=300, peak_gib=2)
    measured(alice, "net-b", 80, throughput=100, peak_gib=4)
    response = client.get(f"/b/digits/weighted/?w_throughput={raw}")
    if raw in ("", "2.5"):  # empty: the default
        assert response.status_code == 200
        return
    assert response.status_code == 400, raw
    # a NUL is refused before any view, by the site's middleware, naming the parameter too
    assert ("w_throughput must be a number from 0 to 5" if raw != "%00" else "w_throughput") in (
        response.content.decode())


def test_a_weight_for_no_metric_of_the_ranking_is_named_not_ignored(client, alice):
    measured(alice, "net-a", 70, throughput=300, peak_gib=2)
    measured(alice, "net-b", 80, throughput=100, peak_gib=4)
    html = client.get("/b/digits/weighted/?w_troughput=5&w_performance=4").content.decode()
    notes = html.split('id="dropped"', 1)[1].split("</ul>", 1)[0]
    assert "w_troughput is not weighed: this ranking has no such metric (its weights: w_performance, " in notes
    assert "w_performance is not" not in notes
    many = "&".join(f"w_x{i}=1" for i in range(900))
    assert client.get(f"/b/digits/weighted/?{many}").content.decode().count("has no such metric") == 5


@pytest.mark.parametrize("offset", ["9" * 30, "9223372036854775808", "-5", "x"])
def test_a_board_offset_past_any_integer_the_database_holds_is_an_empty_page_not_an_error(client, alice, offset):
    measured(alice, "net-a", 70, throughput=300, peak_gib=2)
    response = client.get(f"/b/digits/?offset={offset}")
    assert response.status_code == 200  # it answered 500 (PostgreSQL: bigint out of range)
    assert ("net-a" in response.content.decode()) == (offset in ("-5", "x"))  # those read as the first page
