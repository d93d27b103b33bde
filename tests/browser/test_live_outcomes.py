"""The submission page updates itself when a job ends: the last progress text gives way to how it
ended, and a visitor's live view never receives the failure's details (its owner's does)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_researcher_journeys import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UPLOADER_PATH = "/home/alice/projects/opt/sgd.py"


def test_a_job_that_times_out_says_so_live_and_visitors_get_no_details_while_the_owner_does(
        page, browser, live_server, alice, make_submission, runner_api, django_capture_on_commit_callbacks):
    sub = make_submission(alice)
    job, *_ = sub.jobs.select_related("task")
    attempt = runner_api.claim(job.pk).json()["spec"]["attempt"]
    runner_api.post(f"jobs/{job.pk}/heartbeat/", {"attempt": attempt, "progress": 0.02,
                                                  "message": "starting the sandbox"})
    owner = browser.new_context().new_page()
    log_in(owner, live_server, "alice", "alice-password-1")
    for viewer in (page, owner):
        viewer.goto(f"{live_server.url}/s/{sub.pk}/")
        expect(viewer.locator(f'tr[data-job="{job.pk}"] .prog')).to_contain_text("2% starting the sandbox")

    with django_capture_on_commit_callbacks(execute=True):
        runner_api.post(f"jobs/{job.pk}/fail/", {
            "attempt": attempt, "kind": "timeout",
            "message": f"ran past its time limit of 600 s and was stopped\nlast frame: {UPLOADER_PATH}",
            "log_tail": "step 1 of 100"})
    for viewer in (page, owner):
        row = viewer.locator(f'tr[data-job="{job.pk}"]')
        expect(row.locator(".prog")).to_have_text("timed out after 600 s")
        expect(row.locator(".error")).to_have_text("timeout: ran past its time limit of 600 s and was stopped")
    assert UPLOADER_PATH not in page.content() and "step 1 of 100" not in page.content()
    details = owner.locator(f'tr[data-job="{job.pk}"] .error-details')
    details.locator("summary").click()
    expect(details).to_contain_text(UPLOADER_PATH)
    expect(details).to_contain_text("step 1 of 100")
    owner.context.close()
