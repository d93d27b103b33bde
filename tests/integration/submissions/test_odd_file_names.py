"""Uploads under odd file names, through the REST API and the web form, as a hostile or careless
client sends them (raw multipart bodies): the storage name is always the platform's own, the
uploader's name is shortened metadata, and no name or storage fault becomes a server error."""
from __future__ import annotations

import hashlib
import logging
import unicodedata
from urllib.parse import quote

import pytest
from django.core.files.storage import default_storage

from leaderboard.accounts.models import ApiToken
from leaderboard.submissions.models import Submission
from leaderboard.submissions.services import artifact_display_name
from tests.conftest import OPTIMIZER_SOURCE

pytestmark = pytest.mark.django_db

BOUNDARY = "----odd-names-boundary"
REPORTED = "é" * 228 + "_optimizer1.py"  # the report: 242 characters, 470 bytes of UTF-8
ACCEPTED_NAMES = {
    "reported-242-chars-470-bytes": REPORTED,
    "cjk-600-bytes": "模型" * 100 + ".py",
    "emoji-4-byte-characters": "😀" * 100 + ".py",
    "ascii-254-characters": "a" * 251 + ".py",
    "parent-folders": "../../../../etc/cron.d/evil.py",
    "windows-path": "..\\..\\Windows\\System32\\evil.py",
    "nul-byte": "nul\x00byte.py",
    "right-to-left-override": "evil\u202eyp.py",
    "zero-width-space": "zero\u200bwidth.py",
    "line-breaks": "line\r\nbreak\tand tab.py",
    "html": "<script>alert(1)</script>.py",
    "quotes-and-shell": '"; rm -rf ~; echo ".py',
    "percent-encoded-dots": "%2e%2e%2fpercent.py",
    "dots-then-extension": "....py",
    "reserved-on-windows": "CON.py",
    "upper-case-extension": "SGD.PY",
}
UNUSABLE_NAMES = {"only-dots": "...", "two-dots": "..", "slash": "/", "nul": "\x00", "rtl-only": "\u202e\u202e"}
FIELDS = {"benchmark": "opt-synthetic", "name": "odd name", "hparams": '{"lr": 0.1}', "visibility": "public"}


def multipart(filename: str, content: bytes, *, raw_utf8: bool | None = None) -> bytes:
    """A multipart body with the file's name sent either as a browser does (raw UTF-8 in quotes)
    or RFC 2231-encoded (filename*=), which can carry any character a hostile client picks. By
    default, raw unless the name holds a quote, a line break or a NUL (Django reads at most 1,024
    bytes of part headers, which a percent-encoded long name exceeds)."""
    if raw_utf8 is None:
        raw_utf8 = not any(c in filename for c in '"\r\n\x00')
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in FIELDS.items()]
    disposition = (f'filename="{filename}"' if raw_utf8 else f"filename*=UTF-8''{quote(filename, safe='')}")
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="artifact"; {disposition}\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def post(client, via: str, token: str, filename: str, *, raw_utf8: bool | None = None):
    url = "/api/v1/submissions/" if via == "api" else "/submit/"
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if via == "api" else {}
    return client.post(url, data=multipart(filename, OPTIMIZER_SOURCE, raw_utf8=raw_utf8),
                       content_type=f"multipart/form-data; boundary={BOUNDARY}", **headers)


@pytest.fixture
def token(alice, client, catalogue, settings):
    settings.SUBMISSIONS_PER_DAY = settings.SUBMISSIONS_CONCURRENT = 100
    client.force_login(alice)
    return ApiToken.issue(user=alice, name="odd names")[1]


def assert_stored_under_the_platforms_name(submission: Submission) -> None:
    sha = hashlib.sha256(OPTIMIZER_SOURCE).hexdigest()
    assert submission.artifact.name == f"artifacts/{sha[:2]}/{sha}/artifact.py"
    with default_storage.open(submission.artifact.name, "rb") as fh:
        assert fh.read() == OPTIMIZER_SOURCE
    shown = submission.artifact_name
    assert 0 < len(shown.encode()) <= 200 and shown.lower().endswith(".py")
    assert "/" not in shown and "\\" not in shown
    assert not any(unicodedata.category(c).startswith("C") for c in shown)


@pytest.mark.parametrize("via", ["api", "form"])
@pytest.mark.parametrize("filename", ACCEPTED_NAMES.values(), ids=ACCEPTED_NAMES.keys())
def test_an_odd_file_name_is_accepted_and_stored_under_the_platforms_own_name(client, token, via, filename):
    response = post(client, via, token, filename)
    assert response.status_code == (201 if via == "api" else 302), response.content[:500]
    assert_stored_under_the_platforms_name(Submission.objects.get())


@pytest.mark.parametrize("via", ["api", "form"])
def test_the_reported_242_character_name_sent_as_a_browser_sends_it_is_accepted(client, token, via):
    response = post(client, via, token, REPORTED, raw_utf8=True)
    assert response.status_code == (201 if via == "api" else 302), response.content[:500]
    submission = Submission.objects.get()
    assert_stored_under_the_platforms_name(submission)
    assert submission.artifact_name.startswith("é" * 90) and submission.artifact_name.endswith("….py")


@pytest.mark.parametrize("via", ["api", "form"])
@pytest.mark.parametrize("filename", UNUSABLE_NAMES.values(), ids=UNUSABLE_NAMES.keys())
def test_a_name_that_leaves_nothing_usable_gets_a_clear_field_error(client, token, via, filename):
    response = post(client, via, token, filename)
    if via == "api":
        assert response.status_code == 400 and response.json()["artifact"]
    else:
        assert response.status_code == 200 and 'class="field has-error"' in response.content.decode()
    assert not Submission.objects.exists()


@pytest.mark.parametrize("name, shown", [
    ("é" * 300 + ".onnx", "é" * 96 + "….onnx"),  # 2-byte characters are never cut in half
    ("😀" * 60 + ".py", "😀" * 48 + "….py"),
    ("a/b\\c.py", "c.py"),
    ("x\u202e\u200b\x00y.pt", "xy.pt"),
    ("  a \t b  .py ", "a b .py"),
    ("", ""),
])
def test_the_shown_name_is_shortened_by_bytes_and_keeps_its_extension(name, shown):
    assert artifact_display_name(name) == shown
    assert len(artifact_display_name(name).encode()) <= 200


@pytest.fixture
def broken_storage(settings, tmp_path):
    """A real storage fault: the media folder is a plain file, so no folder can be made under it."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.MEDIA_ROOT = str(blocker)


def test_a_storage_fault_is_a_503_json_error_through_the_api_logged_and_nothing_is_created(
        client, token, broken_storage, caplog):
    with caplog.at_level(logging.ERROR, logger="leaderboard.submissions.services"):
        response = post(client, "api", token, "sgd.py")
    assert response.status_code == 503
    assert "fault on our side" in response.json()["detail"] and "Errno" not in response.json()["detail"]
    assert not Submission.objects.exists()
    assert any(r.exc_info and r.levelno == logging.ERROR for r in caplog.records)


def test_a_storage_fault_through_the_form_is_a_503_page_that_keeps_what_was_typed(client, token, broken_storage):
    response = post(client, "form", token, "sgd.py")
    page = response.content.decode()
    assert response.status_code == 503
    assert "fault on our side" in page and "Traceback" not in page
    assert 'value="odd name"' in page
    assert not Submission.objects.exists()
