"""What a failed job tells whom: visitors see its error kind and a one-line, path-free summary on
every public surface (page, live status, API, exports); its owner and staff see the whole
message and the log tail. An ended job says how it ended instead of its last progress text."""
from __future__ import annotations

import json

import pytest
from django.utils.html import escape

from leaderboard.accounts.models import ApiToken
from leaderboard.submissions.models import EvaluationJob
from leaderboard.submissions.outcomes import error_summary

pytestmark = pytest.mark.django_db

UPLOADER_PATH = "/home/alice/projects/digits-half/model.py"
TORCHSCRIPT_FAILURE = (
    "the model raised RuntimeError: The following operation failed in the TorchScript interpreter.\n"
    "Traceback of TorchScript, original code (most recent call last):\n"
    f'  File "{UPLOADER_PATH}", line 31, in forward\n'
    "        x = self.conv(x)\n"
    "RuntimeError: Input type (float) and bias type (c10::Half) should be the same"
)
LOG_TAIL = "loading model.pt\nbatch 1/8 on cpu\n/srv/runner/jobs/17/scratch: 3 files"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("maintainer", "m@example.org", "maintainer-pw-1", is_staff=True)


def heartbeat(api, job_id, attempt, progress, message):
    return api.post(f"jobs/{job_id}/heartbeat/", {"attempt": attempt, "progress": progress, "message": message})


def fail(api, job, kind, message, *, log_tail="", progress=None, django_capture_on_commit_callbacks):
    attempt = api.claim(job.pk).json()["spec"]["attempt"]
    if progress:
        assert heartbeat(api, job.pk, attempt, *progress).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"jobs/{job.pk}/fail/", {"attempt": attempt, "kind": kind, "message": message,
                                                    "log_tail": log_tail})
    assert response.status_code == 200, response.content


@pytest.fixture
def failed_half_model(alice, make_submission, runner_api, django_capture_on_commit_callbacks):
    """Alice's submission whose every task failed with a TorchScript traceback holding her paths."""
    sub = make_submission(alice, name="half model")
    for job in sub.jobs.select_related("task"):
        fail(runner_api, job, "runtime_error", TORCHSCRIPT_FAILURE, log_tail=LOG_TAIL,
             django_capture_on_commit_callbacks=django_capture_on_commit_callbacks)
    sub.refresh_from_db()
    assert sub.status == "failed" and UPLOADER_PATH in sub.error_message
    return sub


def public_surfaces(client, sub, headers=None):
    """Every page and document that shows the submission, as this client sees them."""
    headers = headers or {}
    return {
        "page": client.get(f"/s/{sub.pk}/", **headers).content.decode(),
        "status.json": client.get(f"/s/{sub.pk}/status.json", **headers).content.decode(),
        "api": client.get(f"/api/v1/submissions/{sub.pk}/", **headers).content.decode(),
        "export.json": client.get(f"/s/{sub.pk}/export.json", **headers).content.decode(),
        "export.csv": client.get(f"/s/{sub.pk}/export.csv", **headers).content.decode(),
    }


@pytest.mark.parametrize("viewer", ["anonymous", "another user"])
def test_visitors_see_the_error_kind_and_a_one_line_summary_without_paths_or_traceback(
        client, bob, failed_half_model, viewer):
    if viewer == "another user":
        client.force_login(bob)
    for surface, text in public_surfaces(client, failed_half_model).items():
        assert "/home/alice" not in text and "Traceback" not in text, surface
        assert "batch 1/8" not in text and "/srv/runner" not in text, surface
    page = public_surfaces(client, failed_half_model)["page"]
    assert "runtime_error" in page
    assert "failed: runtime error" in page
    assert "runtime_error: the model raised RuntimeError: The following operation failed in the TorchScript interpreter." in page
    doc = json.loads(client.get(f"/api/v1/submissions/{failed_half_model.pk}/").content)
    assert doc["error_message"] == "; ".join(
        f"{task}: the model raised RuntimeError: The following operation failed in the TorchScript interpreter."
        for task in ("opt-f1", "opt-f2", "opt-f3"))
    job = doc["jobs"][0]
    assert job["error_kind"] == "runtime_error" and "\n" not in job["error_message"] and job["log_tail"] == ""
    assert job["error_message"] == job["error_summary"]


def test_the_owner_sees_the_whole_message_and_the_log_tail_on_the_page_and_through_the_api(
        client, alice, failed_half_model):
    client.force_login(alice)
    surfaces = public_surfaces(client, failed_half_model)
    assert UPLOADER_PATH in surfaces["page"] and "batch 1/8 on cpu" in surfaces["page"]
    assert "Details (only the owner and staff see these)" in surfaces["page"]
    token = ApiToken.issue(user=alice, name="cli")[1]
    client.logout()
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}
    job = client.get(f"/api/v1/submissions/{failed_half_model.pk}/", **auth).json()["jobs"][0]
    assert job["error_message"] == TORCHSCRIPT_FAILURE and job["log_tail"] == LOG_TAIL
    assert client.get(f"/api/v1/submissions/{failed_half_model.pk}/", **auth).json()["error_message"] == \
        failed_half_model.error_message
    listed = client.get("/api/v1/submissions/", **auth).json()[0]["jobs"][0]
    assert listed["error_message"] == TORCHSCRIPT_FAILURE


def test_staff_see_the_details_of_anyones_submission(client, staff, failed_half_model):
    client.force_login(staff)
    job = json.loads(client.get(f"/s/{failed_half_model.pk}/status.json").content)["jobs"][0]
    assert job["log_tail"] == LOG_TAIL and job["error_message"] == TORCHSCRIPT_FAILURE


OUTCOMES = [
    ("timeout", "ran past its time limit of 600 s and was stopped", "timed out after 600 s"),
    ("timeout", "used more than 1200 s of CPU time and was stopped", "timed out after 1200 s of CPU time"),
    ("timeout", "ran past the task's time limit while reading outputs and was stopped", "timed out after {task_limit} s"),
    ("out_of_memory", "ran out of memory (limit 4.0 GiB of address space): MemoryError",
     "failed: out of memory"),
    ("wrong_output", f"outputs have shape [64, 9] (see {UPLOADER_PATH}); expected [N, 10]",
     "failed: wrong output"),
]


@pytest.mark.parametrize("kind, message, outcome", OUTCOMES)
def test_an_ended_job_says_how_it_ended_instead_of_its_last_progress_text(
        client, alice, make_submission, runner_api, django_capture_on_commit_callbacks, kind, message, outcome):
    sub = make_submission(alice)
    job = sub.jobs.select_related("task").first()
    fail(runner_api, job, kind, message, progress=(0.02, "starting the sandbox"),
         django_capture_on_commit_callbacks=django_capture_on_commit_callbacks)
    outcome = outcome.format(task_limit=job.task.time_limit_s)
    page = client.get(f"/s/{sub.pk}/").content.decode()
    assert f'<span class="outcome">{escape(outcome)}</span>' in page
    assert "starting the sandbox" not in page and "2%" not in page
    assert escape(f"{kind}: {error_summary(message)}") in page and UPLOADER_PATH not in page
    status = json.loads(client.get(f"/s/{sub.pk}/status.json").content)
    assert [j["outcome"] for j in status["jobs"] if j["id"] == job.pk] == [outcome]


def test_finished_and_cancelled_jobs_say_so_and_running_ones_keep_their_progress(
        client, alice, make_submission, runner_api, finish_job):
    sub = make_submission(alice)
    first, second, third = sub.jobs.select_related("task")
    finish_job(runner_api, first)
    attempt = runner_api.claim(second.pk).json()["spec"]["attempt"]
    heartbeat(runner_api, second.pk, attempt, 0.4, "step 40 of 100")
    outcomes = {j["id"]: j["outcome"] for j in json.loads(client.get(f"/s/{sub.pk}/status.json").content)["jobs"]}
    assert outcomes == {first.pk: "finished", second.pk: None, third.pk: None}
    assert "40% step 40 of 100" in client.get(f"/s/{sub.pk}/").content.decode()
    client.force_login(alice)
    client.post(f"/s/{sub.pk}/cancel/")
    jobs = {j["id"]: j for j in json.loads(client.get(f"/s/{sub.pk}/status.json").content)["jobs"]}
    assert jobs[second.pk]["outcome"] == jobs[third.pk]["outcome"] == "cancelled: cancelled by its owner"
    assert EvaluationJob.objects.get(pk=first.pk).state == "succeeded" and jobs[first.pk]["outcome"] == "finished"


@pytest.mark.parametrize("message, summary", [
    (TORCHSCRIPT_FAILURE,
     "the model raised RuntimeError: The following operation failed in the TorchScript interpreter."),
    ('Traceback (most recent call last):\n  File "/srv/runner/child.py", line 3, in <module>\n'
     "ValueError: cannot read /home/bob/data.npz", "ValueError: cannot read <path>"),
    ("cannot open C:\\Users\\alice\\model.onnx or \\\\fileserver\\share\\m.onnx", "cannot open <path> or <path>"),
    ("see ~/models/x.pt and file:///etc/passwd (at /opt/a/b.py:12)", "see <path> and <path> (at <path>:12)"),
    ("top-1 3/4 of batches at 1 km/h; url http://example.org/a/b",
     "top-1 3/4 of batches at 1 km/h; url http://example.org/a/b"),
    ("x" * 300, "x" * 199 + "…"),
    ("", ""),
])
def test_the_public_summary_is_one_line_without_paths(message, summary):
    assert error_summary(message) == summary
