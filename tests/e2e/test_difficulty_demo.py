"""Issue 17 item 6 for the digits board, the way `make demo` fills it: the seeded digits baselines
(seed_baselines' TorchScript and ONNX CNN) evaluated by a real `runner work` process, their
per-image files with thumbnails uploaded, and the hardest-images page and failure explorer built
from them."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from leaderboard.boards.models import BoardEntry
from leaderboard.submissions.baselines import baselines_seed
from leaderboard.submissions.models import EvaluationJob, Submission
from leaderboard.submissions.per_image import load_per_image
from tests.e2e.test_worker_end_to_end import lifecycle_settings, redis_url, runners, wait_for  # noqa: F401
from tests.integration.boards.test_paired_ties import ranks

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_the_seeded_digits_classifiers_fill_the_hardest_images_and_failure_pages(
        client, redis_url, runners, lifecycle_settings):  # noqa: F811
    node = runners("node-difficulty", redis_url)
    assert baselines_seed(benchmarks=["digits"]) == 2
    jobs = EvaluationJob.objects.filter(submission__benchmark__slug="digits")
    wait_for(lambda: jobs.count() == 2 and all(j.per_image for j in jobs.all()), 300, reap=True,
             what="both digits baselines' per-image files", runners=[node])
    # Storing each file asked the site worker to refresh the task's paired ties (run inline here,
    # after the upload's commit): the two exports of one CNN predict alike, so the test ties them.
    entries = BoardEntry.objects.filter(task__slug="digits")
    wait_for(lambda: entries.count() == 2 and all(e.tie_rank == 1 for e in entries.all()), 60,
             what="the paired ties of both digits baselines", runners=[node])
    assert sorted(e.paired.get("group_size") for e in entries) == [2, 2]
    assert [e.paired["p_holm"] >= 0.05 for e in entries if "p_holm" in e.paired] == [True]  # the non-leader
    assert sorted(ranks(client).values()) == ["=1", "=1"]  # the board, as a reader sees it

    html = client.get("/b/digits/?task=digits").content.decode()
    assert "/b/digits/hardest/digits/" in html
    response = client.get("/b/digits/hardest/digits/")
    assert response.status_code == 200
    summary = response.context["summary"]
    assert summary["k"] == 2 and summary["provisional"] and summary["n_images"] == 450
    # the two exports of one CNN fail on the same images: those top the ranking, each with a thumbnail
    files = [load_per_image(job) for job in jobs.order_by("pk")]
    wrong = files[0]["pred"] != files[0]["label"]
    hardest = summary["hardest"][: int(wrong.sum())]
    assert {row["keys"]["index"] for row in hardest} == set(files[0]["index"][wrong].tolist())
    for row in hardest:
        assert row["wrong"] == 1.0 and row["thumb"] is not None
        sid, job_id, position = row["thumb"]
        png = client.get(f"/s/{sid}/thumbs/{job_id}/{position}.png")
        assert png.status_code == 200
        assert np.asarray(Image.open(io.BytesIO(png.content))).shape == (32, 32, 3)

    sub = Submission.objects.filter(benchmark__slug="digits").order_by("pk").first()
    assert f"/s/{sub.pk}/failures/digits/" in client.get(f"/s/{sub.pk}/").content.decode()
    page = client.get(f"/s/{sub.pk}/failures/digits/")
    assert page.status_code == 200
    shown = [item for group in page.context["groups"] for item in group["failures"]]
    assert len(shown) == int(wrong.sum()) and all(item["field_wrong"] == 1.0 for item in shown)
    assert b"/thumbs/" in page.content
