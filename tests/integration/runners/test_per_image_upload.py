"""The runner API's per-image upload (issue 17 item 1): after a classifier's result, its runner
sends the .npz the result names; the site checks and stores it with the job, and
leaderboard.submissions.per_image.load_per_image reads it back. Hostile or broken files are
refused with a message that says what is wrong."""
from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest

from leaderboard.submissions.per_image import PerImageError, check_against_result, load_per_image
from runner.baselines.classifiers import FOLDER
from runner.per_image_file import npz_bytes
from runner.spec import make_result

pytestmark = pytest.mark.django_db


def arrays(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    label = rng.integers(0, 10, n)
    return {"index": np.arange(n) * 3, "label": label, "pred": np.where(np.arange(n) % 2, label, (label + 1) % 10),
            "top5_hit": np.ones(n, bool), "loss": rng.random(n) * 3, "el2n": rng.random(n)}


def classifier_job(make_submission, owner):
    sub = make_submission(owner, benchmark="digits", source=(FOLDER / "digits_cnn.pt").read_bytes(),
                          filename="model.pt", hparams={"precision": "fp32"}, name="digits cnn")
    return sub.jobs.select_related("task").get()


def succeed(runner_api, job, payload: bytes, n: int | None = None) -> None:
    assert runner_api.claim(job.pk).status_code == 200
    doc = make_result("digits", {"top1": 50.0, "top5": 100.0}, timing={"wall_s": 1.0})
    doc["files"] = {"per_image": {"name": "result.per_image.npz", "sha256": hashlib.sha256(payload).hexdigest(),
                                  "n": n if n is not None else 6, "bytes": len(payload)}}
    assert runner_api.result(job.pk, 1, doc).status_code == 200


def upload(runner_api, job_id: int, payload: bytes, attempt: int = 1):
    return runner_api.client.post(f"/api/runner/v1/jobs/{job_id}/per-image/?attempt={attempt}", data=payload,
                                  content_type="application/octet-stream", **runner_api.auth)


def test_the_per_image_file_of_a_result_is_stored_with_its_job_and_reads_back_equal(
        runner_api, alice, make_submission):
    job = classifier_job(make_submission, alice)
    sent = arrays()
    payload = npz_bytes(sent)
    succeed(runner_api, job, payload)
    job.refresh_from_db()
    assert load_per_image(job) is None  # nothing yet: the result came first

    response = upload(runner_api, job.pk, payload)
    assert response.status_code == 200, response.content
    assert response.json() == {"stored": True, "duplicate": False}
    job.refresh_from_db()
    assert job.per_image.name.startswith(f"per_image/{job.submission_id}/job{job.pk}-attempt1")
    back = load_per_image(job)
    assert back is not None and sorted(back) == sorted(sent)
    for key, value in sent.items():
        np.testing.assert_array_equal(back[key], value)
    again = upload(runner_api, job.pk, payload)
    assert again.status_code == 200 and again.json()["duplicate"] is True


def test_a_file_before_its_result_from_another_runner_or_for_another_attempt_gets_409(
        runner_api, second_runner_api, alice, make_submission):
    job = classifier_job(make_submission, alice)
    payload = npz_bytes(arrays())
    assert runner_api.claim(job.pk).status_code == 200
    early = upload(runner_api, job.pk, payload)
    assert early.status_code == 409 and "post the result first" in early.json()["detail"]
    doc = make_result("digits", {"top1": 50.0, "top5": 100.0})
    doc["files"] = {"per_image": {"name": "x.npz", "sha256": hashlib.sha256(payload).hexdigest(), "n": 6}}
    assert runner_api.result(job.pk, 1, doc).status_code == 200
    assert upload(second_runner_api, job.pk, payload).status_code == 409
    assert upload(runner_api, job.pk, payload, attempt=2).status_code == 409
    assert upload(runner_api, 999_999, payload).status_code == 404
    response = runner_api.client.post(f"/api/runner/v1/jobs/{job.pk}/per-image/?attempt=1", data=payload,
                                      content_type="application/octet-stream", HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 401
    job.refresh_from_db()
    assert not job.per_image


def test_a_result_that_names_no_file_takes_none(runner_api, alice, make_submission):
    job = classifier_job(make_submission, alice)
    runner_api.claim(job.pk)
    assert runner_api.result(job.pk, 1, make_result("digits", {"top1": 50.0, "top5": 100.0})).status_code == 200
    response = upload(runner_api, job.pk, npz_bytes(arrays()))
    assert response.status_code == 400 and "names no per-image file" in response.json()["detail"]


def pickled() -> bytes:
    """A well-named .npz whose label array is a pickle of Python objects."""
    buffer = io.BytesIO(npz_bytes({k: v for k, v in arrays().items() if k != "label"}))
    member = io.BytesIO()
    np.lib.format.write_array(member, np.array([{"x": 1}] * 6, dtype=object), allow_pickle=True)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("label.npy", member.getvalue())
    return buffer.getvalue()


@pytest.mark.parametrize("payload, n, message", [
    (pickled(), 6, "label holds Python objects (a pickle)"),
    (b"this is not a zip", 6, "not an .npz file"),
    (npz_bytes({k: v for k, v in arrays().items() if k != "el2n"}), 6, "lacks the arrays ['el2n']"),
    (npz_bytes({**arrays(), "loss": np.zeros(5)}), 6, "arrays differ in length"),
    (npz_bytes(arrays()), 7, "6 images, but the result names 7"),
])
def test_a_malformed_or_pickled_file_is_refused_with_what_is_wrong(runner_api, alice, make_submission, payload, n,
                                                                  message):
    job = classifier_job(make_submission, alice)
    succeed(runner_api, job, payload, n=n)
    response = upload(runner_api, job.pk, payload)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("per-image file refused: ") and message in response.json()["detail"]
    job.refresh_from_db()
    assert not job.per_image and load_per_image(job) is None


def test_a_file_other_than_the_one_the_result_names_is_refused(runner_api, alice, make_submission):
    job = classifier_job(make_submission, alice)
    succeed(runner_api, job, npz_bytes(arrays()))
    response = upload(runner_api, job.pk, npz_bytes(arrays(6) | {"loss": np.zeros(6)}))
    assert response.status_code == 400 and "differs from the" in response.json()["detail"]


def test_an_oversized_file_is_refused_before_it_is_read(runner_api, alice, make_submission, settings):
    settings.MAX_PER_IMAGE_BYTES = 1000
    job = classifier_job(make_submission, alice)
    payload = npz_bytes(arrays(500))
    assert len(payload) > 1000
    succeed(runner_api, job, payload, n=500)
    response = upload(runner_api, job.pk, payload)
    assert response.status_code == 413 and "at most 1,000 bytes" in response.json()["detail"]
    job.refresh_from_db()
    assert not job.per_image


def test_a_rerun_deletes_the_jobs_per_image_files_with_them(runner_api, alice, make_submission,
                                                            django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage

    from leaderboard.submissions.services import submission_rerun

    job = classifier_job(make_submission, alice)
    payload = npz_bytes(arrays())
    succeed(runner_api, job, payload)
    assert upload(runner_api, job.pk, payload).status_code == 200
    job.refresh_from_db()
    name = job.per_image.name
    assert default_storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        submission_rerun(submission_id=job.submission_id)
    assert not default_storage.exists(name)
    fresh = job.submission.jobs.get()
    assert fresh.pk != job.pk and not fresh.per_image


def test_files_above_djangos_in_memory_body_limit_are_streamed_not_refused(runner_api, alice, make_submission,
                                                                          settings):
    """ImageNet-C's file is some 100 MB: the view streams the body to a spooled file, so Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE (a limit on bodies read whole) never applies to it."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    job = classifier_job(make_submission, alice)
    payload = npz_bytes(arrays(500))
    assert len(payload) > 1000
    succeed(runner_api, job, payload, n=500)
    assert upload(runner_api, job.pk, payload).status_code == 200
    job.refresh_from_db()
    assert len(load_per_image(job)["el2n"]) == 500


def test_a_file_whose_top1_is_not_the_results_is_refused_naming_both(runner_api, alice, make_submission):
    """A runner's file of another run (or outputs in another order) describes other predictions than
    the result it came with: refused at upload, before it sways ties or difficulty."""
    job = classifier_job(make_submission, alice)
    sent = arrays()  # 3 of 6 right: 50%, as succeed()'s result says
    sent["pred"] = sent["label"].copy()
    sent["pred"][:2] = (sent["label"][:2] + 1) % 10  # 4 of 6 right: 66.67%
    payload = npz_bytes(sent)
    succeed(runner_api, job, payload)
    response = upload(runner_api, job.pk, payload)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "66.666667%" in detail and "top1 50.000000%" in detail and "different runs" in detail
    job.refresh_from_db()
    assert not job.per_image


def test_only_the_main_part_counts_towards_the_files_top1():
    """imagenet-r's files hold two parts (renditions, and the 200-class val images): its top1 is the
    renditions'."""
    sent = arrays()  # 50% right over all six
    sent["pred"] = sent["label"].copy()
    sent["pred"][[0, 1]] = (sent["label"][[0, 1]] + 1) % 10  # main: rows 0-3, 2 of 4 right = 50%
    sent["part"] = np.array(["main"] * 4 + ["imagenet200"] * 2)  # the other part all right
    check_against_result(sent, {"metrics": {"top1": 50.0}})
    with pytest.raises(PerImageError, match="66.666667%"):
        check_against_result(sent, {"metrics": {"top1": 100.0 * 4 / 6}})
    # -C files (top1 a mean over the standard sets), geographic ones (any-of labels) and results
    # without a finite top1 are not checked
    check_against_result({**sent, "corruption": np.array(["fog"] * 6)}, {"metrics": {"top1": 1.0}})
    check_against_result({**sent, "region": np.array(["Africa"] * 6)}, {"metrics": {"top1": 1.0}})
    check_against_result(sent, {"metrics": {"top1": float("nan")}})
    check_against_result(sent, {"metrics": {}})
