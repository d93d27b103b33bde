"""A result whose training loop ran in the sandbox beside the submission (result ``env.loop`` is
"sandbox": training tasks on a GPU) is not forgery-proof, and every place that shows it says so:
the board row, the API's rows, the board's CSV and JSON exports, the submission's page, its API
status and its exports. A result of the runner's own loop (``env.loop`` "runner") carries no label.
The label follows the result document alone (result_loop_in_sandbox), whatever the task; these
tests post optimizer results on opt-f1..3 with one or the other loop, as a GPU runner would post a
training result. Synthetic-data results are labelled in the submission's exports the same way."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.apps import apps

from leaderboard.boards.models import BoardEntry
from tests.conftest import synthetic_result

pytestmark = pytest.mark.django_db

LABEL = "loop in sandbox (GPU): not forgery-proof"


def finish(runner_api, sub, capture, *, loop: str, synthetic: bool = False, loss: float = 0.01):
    for job in sub.jobs.select_related("task"):
        spec = runner_api.claim(job.pk).json()["spec"]
        result = synthetic_result(job.task.slug, loss)
        result["env"].update(loop=loop, synthetic_data=synthetic)
        with capture(execute=True):
            assert runner_api.result(job.pk, spec["attempt"], result).status_code == 200
    return sub


@pytest.fixture
def sandboxed_and_runner(alice, bob, make_submission, runner_api, django_capture_on_commit_callbacks):
    gpu = finish(runner_api, make_submission(alice, name="gpu-opt"), django_capture_on_commit_callbacks,
                 loop="sandbox", synthetic=True, loss=0.01)
    cpu = finish(runner_api, make_submission(bob, name="cpu-opt"), django_capture_on_commit_callbacks,
                 loop="runner", loss=0.04)
    return gpu, cpu


def row_of(html: str, marker: str) -> str:
    return html.split(marker)[1].split("</tr>")[0]


def test_the_board_page_api_and_exports_label_the_sandboxed_loop_and_only_it(client, sandboxed_and_runner):
    gpu, cpu = sandboxed_and_runner
    html = client.get("/b/opt-synthetic/?task=opt-f1").content.decode()
    assert LABEL in row_of(html, f'data-submission="{gpu.pk}"')
    assert LABEL not in row_of(html, f'data-submission="{cpu.pk}"')
    assert "docs/submissions.md" in row_of(html, f'data-submission="{gpu.pk}"')  # where the reason is written

    rows = {r["submission_id"]: r for r in client.get(
        "/api/v1/benchmarks/opt-synthetic/leaderboard/?task=opt-f1").json()["rows"]}
    assert rows[gpu.pk]["loop_in_sandbox"] is True and rows[cpu.pk]["loop_in_sandbox"] is False

    exported = {r["submission_id"]: r for r in json.loads(
        client.get("/b/opt-synthetic/export.json?task=opt-f1").getvalue())["rows"]}
    assert exported[gpu.pk]["loop_in_sandbox"] is True and exported[cpu.pk]["loop_in_sandbox"] is False

    table = {r["name"]: r for r in csv.DictReader(io.StringIO(
        client.get("/b/opt-synthetic/export.csv?task=opt-f1").getvalue().decode()))}
    assert table["gpu-opt"]["loop_in_sandbox"] == "True" and table["cpu-opt"]["loop_in_sandbox"] == "False"
    assert table["gpu-opt"]["synthetic_data"] == "True" and table["cpu-opt"]["synthetic_data"] == "False"


def test_the_submission_page_api_and_exports_label_each_job_whose_loop_ran_in_the_sandbox(client, sandboxed_and_runner):
    gpu, cpu = sandboxed_and_runner
    for sub, labelled in ((gpu, True), (cpu, False)):
        html = client.get(f"/s/{sub.pk}/").content.decode()
        for job in sub.jobs.all():
            assert (LABEL in row_of(html, f'data-job="{job.pk}"')) is labelled
        jobs = client.get(f"/api/v1/submissions/{sub.pk}/").json()["jobs"]
        assert jobs and all(j["loop_in_sandbox"] is labelled and j["synthetic_data"] is labelled for j in jobs)
        full = json.loads(client.get(f"/s/{sub.pk}/export.json").content)
        assert all(j["loop_in_sandbox"] is labelled for j in full["jobs"])
        rows = list(csv.DictReader(io.StringIO(client.get(f"/s/{sub.pk}/export.csv").content.decode())))
        assert rows and {(r["loop_in_sandbox"], r["synthetic_data"]) for r in rows} == {(str(labelled),) * 2}


def test_the_live_page_keeps_the_label_the_server_rendered(client, sandboxed_and_runner):
    """static/js/live-status.js redraws the jobs table from status.json; it takes the label's markup
    from a <template> the page renders from the same partial, so the two cannot drift apart."""
    gpu, _ = sandboxed_and_runner
    html = client.get(f"/s/{gpu.pk}/").content.decode()
    template = html.split('<template id="loop-in-sandbox-tag">')[1].split("</template>")[0]
    assert LABEL in template
    assert client.get(f"/s/{gpu.pk}/status.json").json()["jobs"][0]["loop_in_sandbox"] is True


def test_the_migration_labels_rows_written_before_the_flag_existed(sandboxed_and_runner):
    from importlib import import_module

    gpu, cpu = sandboxed_and_runner
    BoardEntry.objects.update(loop_in_sandbox=False)
    import_module("leaderboard.boards.migrations.0002_boardentry_loop_in_sandbox").backfill(apps, None)
    assert set(BoardEntry.objects.filter(loop_in_sandbox=True).values_list("submission_id", flat=True)) == {gpu.pk}
    assert BoardEntry.objects.filter(submission=cpu).count() == 3


def chart_titles(html: str) -> list[str]:
    import re

    return [json.loads(body)["layout"]["title"]["text"] for body in
            re.findall(r'<script id="[^"]+" type="application/json">(.*?)</script>', html, re.S)]


def test_chart_titles_say_what_the_rows_labels_say(client, sandboxed_and_runner):
    gpu, cpu = sandboxed_and_runner
    board = chart_titles(client.get("/b/opt-synthetic/?task=opt-f1").content.decode())
    assert board and all(t.endswith(" · includes synthetic data, " + LABEL) for t in board)
    labelled = chart_titles(client.get(f"/s/{gpu.pk}/").content.decode())
    assert labelled and all(t.endswith(" · synthetic data, " + LABEL) for t in labelled)
    plain = chart_titles(client.get(f"/s/{cpu.pk}/").content.decode())
    assert plain and not any(" · " in t for t in plain)


def test_a_gpu_training_result_is_labelled_on_its_board_and_on_the_optimizer_profiles(client, alice, bob, catalogue):
    """The real case: a ResNet-18 training task run on a GPU (env.loop "sandbox") beside one run on
    the runner's loop (CPU), on the task's board and on the cross-task profiles page."""
    from django.utils import timezone

    from leaderboard.benchmarks.models import Benchmark, Task
    from leaderboard.boards.services import board_entry_upsert
    from leaderboard.submissions.models import EvaluationJob, Submission
    from runner.spec import make_result

    slug = "opt-cifar10-resnet18"
    subs = {}
    for owner, name, loop, seconds in ((alice, "gpu-adam", "sandbox", 100.0), (bob, "cpu-sgd", "runner", 300.0)):
        sub = Submission.objects.create(owner=owner, benchmark=Benchmark.objects.get(slug=slug), name=name,
                                        artifact=f"x/{name}", artifact_name="opt.py", artifact_sha256="0" * 64,
                                        artifact_size=1, status=Submission.Status.FINISHED)
        result = make_result(slug, {"test_top1_mean": 90.0, "seconds_to_target_mean": seconds},
                             env={"loop": loop, "device": "cuda:0" if loop == "sandbox" else "cpu"})
        job = EvaluationJob.objects.create(submission=sub, task=Task.objects.get(slug=slug), state="succeeded",
                                           attempt=1, result=result, result_attempt=1, finished_at=timezone.now())
        board_entry_upsert(job=job, submission=sub)
        subs[name] = sub
    html = client.get(f"/b/{slug}/").content.decode()
    assert LABEL in row_of(html, f'data-submission="{subs["gpu-adam"].pk}"')
    assert LABEL not in row_of(html, f'data-submission="{subs["cpu-sgd"].pk}"')
    page = client.get("/optimizers/profiles/").content.decode()
    table = page[page.index('id="scores-seconds"'):]
    assert LABEL in row_of(table, "<td>gpu-adam (alice)") and LABEL not in row_of(table, "<td>cpu-sgd (bob)")
    assert chart_titles(page)[0].endswith(" · includes " + LABEL)
