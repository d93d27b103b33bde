"""Issue 17 item 5 end to end: a real `runner work` process evaluates a digits classifier for the
live site, computes saliency maps in the sandbox and posts them with the result, where the site
keeps them for the failure explorer; a runner started with --no-saliency posts none."""

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


def submit_digits_cnn(owner):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from leaderboard.submissions.services import submission_create
    from runner.baselines.classifiers import FOLDER

    model = FOLDER / "digits_cnn.pt"
    sub = submission_create(
        owner=owner,
        benchmark=Benchmark.objects.get(slug="digits"),
        name="digits-cnn",
        upload=SimpleUploadedFile("model.pt", model.read_bytes()),
        hparams={},
    )
    return sub.jobs.get()


def test_runner_work_posts_saliency_maps_that_the_site_keeps_with_the_result(
    client,
    alice,
    redis_url,
    runners,
    lifecycle_settings,
):
    from leaderboard.submissions.per_image import load_per_image

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
    assert "error" not in entry, entry["error"]
    assert entry["method"] == "smoothgrad" and entry["layer"] is None and entry["params"]["copies"] == 50
    maps = saliency_sample.decode_maps(entry)
    rows = np.asarray(entry["rows"], dtype=np.int64)
    assert len(rows) >= 1 and maps.shape == (len(rows), 16, 16)
    stored = load_per_image(job)
    assert stored is not None
    assert entry["index"] == stored["index"][rows].tolist()
    assert entry["failure"] == (stored["pred"][rows] != stored["label"][rows]).tolist()
    # the failure explorer reads the same maps and lays each over its image's thumbnail
    import io

    from PIL import Image

    from leaderboard.boards import saliency_overlays

    np.testing.assert_array_equal(saliency_overlays.read(job.result).maps, maps)
    client.force_login(alice)
    page = client.get(f"/s/{job.submission_id}/failures/digits/")
    assert page.status_code == 200 and b'id="saliency-caption"' in page.content
    shown = [item for group in page.context["groups"] for item in (*group["failures"], *group["successes"])
             if item["overlay"] is not None]
    assert shown and all(rows[item["overlay"]] == item["row"] for item in shown)
    png = client.get(f"/s/{job.submission_id}/saliency/{job.pk}/{shown[0]['overlay']}.png")
    pixels = np.asarray(Image.open(io.BytesIO(png.content)))
    np.testing.assert_array_equal(255 - pixels[..., 1], np.kron(maps[shown[0]["overlay"]], np.ones((4, 4), np.uint8)))


def test_a_runner_started_with_no_saliency_posts_results_without_maps(
    alice,
    redis_url,
    live_server,
    tmp_path,
    catalogue,
    lifecycle_settings,
):
    import os
    import shutil
    import signal
    import subprocess

    from leaderboard.runners.models import RunnerNode
    from tests.e2e.test_worker_end_to_end import RUNNER_BIN

    _, token = RunnerNode.register(name="node-quiet", pools=["cpu"])
    assert shutil.which("bwrap"), "bubblewrap is not installed: the runner's sandbox needs it"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.pop("RUNNER_SALIENCY", None)
    log = tmp_path / "quiet.log"
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
        "--no-saliency",
    ]
    proc = subprocess.Popen(
        args, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
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
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
