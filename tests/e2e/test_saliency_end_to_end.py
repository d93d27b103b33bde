"""Issue 17 item 5 end to end: a real `runner work` process evaluates digits classifiers for the
live site, computes saliency maps in the sandbox and posts them with the result, where the site
keeps them for the failure explorer: every method the format allows (Grad-CAM++, NormGrad and
Smooth Grad-CAM++ for an ExportedProgram, occlusion for ONNX, SmoothGrad for TorchScript), only
the operator's methods under RUNNER_SALIENCY_METHODS, and none under --no-saliency."""

# ruff: noqa: F811 - the fixtures imported from test_worker_end_to_end are these tests' parameters
from __future__ import annotations

import numpy as np
import pytest

from leaderboard.benchmarks.models import Benchmark
from leaderboard.submissions.models import EvaluationJob
from runner import saliency_sample
from tests.e2e.test_worker_end_to_end import (  # noqa: F401 - fixtures
    lifecycle_settings,
    redis_url,
    runners,
    wait_for,
)

pytestmark = [pytest.mark.e2e]


def submit_digits_cnn(owner, file_name: str = "digits_cnn.pt", data: bytes | None = None):
    """A digits submission of the baseline CNN (TorchScript; ``digits_cnn.onnx`` its ONNX export),
    or of ``data`` named ``file_name``: its one job."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leaderboard.submissions.services import submission_create
    from runner.baselines.classifiers import FOLDER

    if data is None:
        data = (FOLDER / file_name).read_bytes()
    sub = submission_create(
        owner=owner,
        benchmark=Benchmark.objects.get(slug="digits"),
        name=file_name.replace(".", "-"),
        upload=SimpleUploadedFile("model" + file_name[file_name.rindex(".") :], data),
        hparams={},
    )
    return sub.jobs.get()


def digits_pt2(tmp_path) -> bytes:
    """A digits convolutional classifier exported as an ExportedProgram (.pt2)."""
    from tests.runner.classifier_models import DigitsConvNet, save_pt2

    return save_pt2(DigitsConvNet().eval(), tmp_path / "digits.pt2", (1, 8, 8)).read_bytes()


def start_runner(name: str, live_server, redis_url: str, tmp_path, *extra: str, env: dict | None = None):
    """A `runner work` process of its own (its own options and environment), in its own session."""
    import os
    import shutil
    import subprocess

    from leaderboard.runners.models import RunnerNode
    from tests.e2e.test_worker_end_to_end import RUNNER_BIN

    _, token = RunnerNode.register(name=name, pools=["cpu"])
    assert shutil.which("bwrap"), "bubblewrap is not installed: the runner's sandbox needs it"
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    environ.pop("RUNNER_SALIENCY", None)
    environ.pop("RUNNER_SALIENCY_METHODS", None)
    environ.update(env or {})
    args = [
        str(RUNNER_BIN),
        "work",
        "--server",
        live_server.url,
        "--token",
        token,
        "--pool",
        "cpu",
        "--data-root",
        str(tmp_path / "data"),
        "--broker",
        redis_url,
        *extra,
    ]
    log = tmp_path / f"{name}.log"
    return subprocess.Popen(
        args, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=environ
    ), log


def stop(proc) -> None:
    import os
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def finished(job, log=None):
    """``job`` once its result and per-image file are stored."""
    wait_for(
        lambda: bool(EvaluationJob.objects.get(pk=job.pk).per_image),
        300,
        reap=True,
        what=f"the job's result and per-image file{': ' + log.read_text()[-2000:] if log else ''}",
    )
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.SUCCEEDED, (job.error_kind, job.error_message)
    return job


def method_maps(job) -> dict[str, tuple[list[int], np.ndarray]]:
    """{method: (rows, maps)} of a stored result, after checking the entry's images against the
    stored per-image file; the site's strict reader agrees with the runner's decoder."""
    from leaderboard.boards import saliency_overlays
    from leaderboard.submissions.per_image import load_per_image

    entry = job.result["saliency"]
    assert entry["format"] == 2 and "error" not in entry, entry.get("error")
    stored = load_per_image(job)
    assert stored is not None
    rows = np.asarray(entry["rows"], dtype=np.int64)
    assert entry["index"] == stored["index"][rows].tolist()
    assert entry["failure"] == (stored["pred"][rows] != stored["label"][rows]).tolist()
    found = saliency_sample.method_maps(entry)
    read = saliency_overlays.read(job.result)
    assert read is not None and [m.method for m in read.shown] == list(found)
    for method in read.shown:
        np.testing.assert_array_equal(method.maps, found[method.method][1])
    return found


def test_runner_work_posts_saliency_maps_that_the_site_keeps_with_the_result(
    client,
    alice,
    redis_url,
    runners,
    lifecycle_settings,
):

    node = runners("node-saliency", redis_url)
    job = submit_digits_cnn(alice)
    wait_for(
        lambda: bool(EvaluationJob.objects.get(pk=job.pk).per_image),
        240,
        reap=True,
        what="the digits job's result and per-image file",
        runners=[node],
    )
    job.refresh_from_db()
    assert job.state == EvaluationJob.State.SUCCEEDED
    entry = job.result["saliency"]
    (method,) = entry["methods"]  # TorchScript: no hookable layers, input gradients only
    assert "error" not in method, method["error"]
    assert method["method"] == "smoothgrad" and method["layer"] is None and method["params"]["copies"] == 50
    rows, maps = method_maps(job)["smoothgrad"]
    assert len(rows) >= 1 and maps.shape == (len(rows), 16, 16)
    # the failure explorer lays each map over the thumbnail of its image
    import io

    from PIL import Image

    client.force_login(alice)
    page = client.get(f"/s/{job.submission_id}/failures/digits/")
    assert page.status_code == 200 and b'id="saliency-caption"' in page.content
    shown = [
        (item, overlays[0])
        for group in page.context["groups"]
        for item in (*group["failures"], *group["successes"])
        if (overlays := item["overlays"])
    ]
    assert shown and all(rows[position] == item["row"] for item, (_, position, _) in shown)
    position = shown[0][1][1]
    png = client.get(f"/s/{job.submission_id}/saliency/{job.pk}/{position}.png")
    pixels = np.asarray(Image.open(io.BytesIO(png.content)))
    np.testing.assert_array_equal(255 - pixels[..., 1], np.kron(maps[position], np.ones((4, 4), np.uint8)))


def test_an_exported_program_gets_every_layer_method_and_onnx_occlusion_through_runner_work(
    client,
    alice,
    redis_url,
    live_server,
    tmp_path,
    catalogue,
    lifecycle_settings,
):
    proc, log = start_runner("node-methods", live_server, redis_url, tmp_path)
    try:
        exported = finished(submit_digits_cnn(alice, "digits.pt2", digits_pt2(tmp_path)), log)
        onnx = finished(submit_digits_cnn(alice, "digits_cnn.onnx"), log)
    finally:
        stop(proc)
    assert exported.result["saliency"]["asked"] == "auto"
    methods = {m["method"]: m for m in exported.result["saliency"]["methods"]}
    assert list(methods) == ["gradcam++", "normgrad", "smooth-gradcam++"]
    for method in methods.values():
        assert "error" not in method and "skipped" not in method, method
        assert method["layer"] == "conv" and method["params"]["graph_node"]
    assert (
        methods["smooth-gradcam++"]["params"]["copies"] == 20 and methods["normgrad"]["params"]["selective"]
    )
    found = method_maps(exported)
    assert list(found) == ["gradcam++", "normgrad", "smooth-gradcam++"]
    first_rows = found["gradcam++"][0]
    # the cheapest method runs first, over every image the budget allows; the others on its images
    assert first_rows == exported.result["saliency"]["rows"] and len(first_rows) >= 1
    assert all(set(rows) <= set(first_rows) for rows, _ in found.values())
    (occlusion,) = onnx.result["saliency"]["methods"]
    assert occlusion["method"] == "occlusion" and occlusion["params"]["window"] >= 1
    assert list(method_maps(onnx)) == ["occlusion"]
    # the explorer offers one overlay per method, each over the image it belongs to
    client.force_login(alice)
    page = client.get(f"/s/{exported.submission_id}/failures/digits/")
    html = page.content.decode()
    assert all(f'id="saliency-show-{slot}"' in html for slot in (0, 1, 2))
    items = [item for group in page.context["groups"] for item in (*group["failures"], *group["successes"])]
    assert any(len(item["overlays"]) >= 2 for item in items)


def test_runner_saliency_methods_gives_only_the_operators_methods(
    alice,
    redis_url,
    live_server,
    tmp_path,
    catalogue,
    lifecycle_settings,
):
    proc, log = start_runner(
        "node-gradcam", live_server, redis_url, tmp_path, env={"RUNNER_SALIENCY_METHODS": "gradcam++"}
    )
    try:
        exported = finished(submit_digits_cnn(alice, "digits.pt2", digits_pt2(tmp_path)), log)
        onnx = finished(submit_digits_cnn(alice, "digits_cnn.onnx"), log)
    finally:
        stop(proc)
    entry = exported.result["saliency"]
    assert entry["asked"] == ["gradcam++"] and [m["method"] for m in entry["methods"]] == ["gradcam++"]
    assert list(method_maps(exported)) == ["gradcam++"]
    # ONNX cannot run it: recorded as skipped, no maps, the result itself untouched
    (skipped,) = onnx.result["saliency"]["methods"]
    assert skipped["method"] == "gradcam++" and "no gradients" in skipped["skipped"] and skipped["rows"] == []
    assert onnx.result["saliency"]["rows"] == [] and onnx.result["metrics"]["top1"] > 0


def test_a_runner_started_with_no_saliency_posts_results_without_maps(
    alice,
    redis_url,
    live_server,
    tmp_path,
    catalogue,
    lifecycle_settings,
):
    proc, _ = start_runner("node-quiet", live_server, redis_url, tmp_path, "--no-saliency")
    try:
        job = submit_digits_cnn(alice)
        wait_for(
            lambda: bool(EvaluationJob.objects.get(pk=job.pk).per_image),
            240,
            reap=True,
            what="the digits job's result",
        )
        job.refresh_from_db()
        assert job.state == EvaluationJob.State.SUCCEEDED and "saliency" not in job.result
    finally:
        stop(proc)
