"""What a researcher does in a real browser: submit, watch, sort, compare, read charts."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from leaderboard.submissions.models import Submission
from tests.conftest import OPTIMIZER_SOURCE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator("header")).to_contain_text(f"Log out {username}")


def test_a_researcher_submits_through_the_form_and_watches_the_status_change_without_reloading(
        page, live_server, alice, tmp_path, runner_api, django_capture_on_commit_callbacks):
    from tests.conftest import synthetic_result

    source = Path(tmp_path / "my_optimizer.py")
    source.write_bytes(OPTIMIZER_SOURCE)
    log_in(page, live_server, "alice", "alice-password-1")
    page.click("text=Submit")
    expect(page.locator(".quota")).to_contain_text("more today")
    page.select_option("#id_benchmark", "opt-synthetic")
    page.fill("#id_name", "browser-sgd")
    page.set_input_files("#id_artifact", str(source))
    page.fill("#id_hparams", '{"lr": 0.1}')
    page.click("#submit-form button[type=submit]")
    expect(page.locator("#status")).to_have_text("queued")
    page.evaluate("window.__noReload = true")

    sub = Submission.objects.get(name="browser-sgd")
    jobs = list(sub.jobs.select_related("task"))
    for job in jobs:
        assert runner_api.claim(job.pk).status_code == 200
    runner_api.heartbeat(jobs[0].pk, 1, progress=0.5)
    expect(page.locator("#status")).to_have_text("running")
    expect(page.locator(f'tr[data-job="{jobs[0].pk}"] .prog')).to_contain_text("50%")
    for job in jobs:
        assert runner_api.result(job.pk, 1, synthetic_result(job.task.slug)).status_code == 200
    expect(page.locator("#status")).to_have_text("finished")
    expect(page.locator("#jobs")).to_contain_text("final_loss")
    assert page.evaluate("window.__noReload") is True


def test_a_visitor_sorts_a_board_and_opens_a_comparison_with_rendered_charts(
        page, live_server, alice, bob, make_submission, runner_api, finish_job):
    subs = []
    for who, loss in ((alice, 0.02), (bob, 0.01), (alice, 0.03)):
        sub = make_submission(who, name=f"{who.username}-{loss}")
        for job in sub.jobs.select_related("task"):
            finish_job(runner_api, job, final_loss=loss)
        subs.append(sub)

    page.goto(f"{live_server.url}/")
    page.click("text=Optimizers: diffGrad's synthetic functions")
    names = page.locator("#board tbody tr td:nth-child(3) a")
    expect(names).to_have_text(["bob-0.01", "alice-0.02", "alice-0.03"])
    page.click("#board thead a:text('final_loss')")  # flip to descending
    expect(names).to_have_text(["alice-0.03", "alice-0.02", "bob-0.01"])
    expect(page.locator("#board thead a.active")).to_have_attribute("aria-sort", "descending")

    for chart in page.locator("[data-chart]").all():
        expect(chart.locator(".main-svg").first).to_be_visible()

    page.check(f'input.pick[value="{subs[0].pk}"]')
    page.check(f'input.pick[value="{subs[1].pk}"]')
    page.click("#compare-button")
    expect(page).to_have_url(re.compile(r"/compare/\?ids="))
    expect(page.locator("h1")).to_have_text("Compare submissions")
    expect(page.locator("table.compare").first).to_contain_text("Δ")
    for chart in page.locator("[data-chart]").all():
        expect(chart.locator(".main-svg").first).to_be_visible()

    with page.expect_download() as download:
        page.goto(f"{live_server.url}/b/opt-synthetic/")
        page.click("text=CSV")
    assert download.value.suggested_filename == "opt-synthetic-opt-f1.csv"


def test_a_denoiser_page_shows_psnr_by_noise_and_crops_that_load(
        page, live_server, alice, make_submission, runner_api, monkeypatch, tmp_path,
        django_capture_on_commit_callbacks):
    """The shipped Gaussian-filter denoiser, evaluated for real (sandboxed) on the six settings."""
    import runner
    from runner import serve
    from runner.evaluate import evaluate
    from runner.spec import JobSpec

    artifact = Path(runner.__file__).parent / "baselines" / "denoisers" / "gaussian-filter.pt"
    sub = make_submission(alice, benchmark="denoise-skimage-gray", source=artifact.read_bytes(),
                          filename="gaussian-filter.pt", hparams={"precision": "fp32"},
                          name="my Gaussian filter")
    monkeypatch.setenv("RUNNER_WORK_DIR", str(tmp_path))
    try:
        for job in sub.jobs.select_related("task"):
            spec = JobSpec.from_dict(runner_api.claim(job.pk).json()["spec"])
            result = evaluate(spec, artifact, data_root=tmp_path)
            with django_capture_on_commit_callbacks(execute=True):
                assert runner_api.result(job.pk, spec.attempt, result).status_code == 200
    finally:
        serve.POOL.close_idle()

    page.goto(f"{live_server.url}/s/{sub.pk}/")
    expect(page.locator("#status")).to_have_text("finished")
    expect(page.locator("#chart-psnr-by-noise .main-svg").first).to_be_visible()
    crops = page.locator("#samples details[open] img")
    expect(crops).to_have_count(6)  # two images × noisy, denoised, clean
    for crop in crops.all():
        crop.scroll_into_view_if_needed()
        expect(crop).to_be_visible()
        page.wait_for_function("img => img.complete && img.naturalWidth === 96", arg=crop.element_handle())
    expect(page.locator("#samples details[open] figcaption").nth(1)).to_contain_text(" dB")
    page.click("#samples summary:text('Gaussian σ=50')")
    expect(page.locator("#samples details[open] img")).to_have_count(12)
