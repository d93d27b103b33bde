"""Paired ties off the result's transaction and per-job outcome vectors (issue 17's tie rule at
ImageNet-C's size): saving a result or storing its per-image file opens no file and computes no
tie; the site worker does, after the commit, under a lock on the task; pages and the refresh read
each file once, into its compact vectors, and never again until the file changes."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TestCase

from leaderboard.benchmarks.models import Task
from leaderboard.boards import paired, services
from leaderboard.boards.models import BoardEntry
from leaderboard.boards.services import board_entry_upsert, board_ties_refresh
from leaderboard.submissions import per_image
from leaderboard.submissions.models import EvaluationJob, OutcomeVectors, Submission
from tests.integration.boards.test_paired_ties import outcomes_file, ranks, scored

N = 450


@pytest.fixture
def npz_opens(monkeypatch) -> list[str]:
    """The names of per-image files opened from storage, in order."""
    opened: list[str] = []
    real = FileSystemStorage._open

    def counting(self, name, mode="rb"):
        if name.endswith(".npz"):
            opened.append(name)
        return real(self, name, mode)

    monkeypatch.setattr(FileSystemStorage, "_open", counting)
    return opened


def unscored(owner, name: str, wrong, *, public: bool = True) -> tuple[Submission, EvaluationJob]:
    """A submission with a succeeded digits job whose result names its per-image file (n and
    sha256, as the runner's result does), neither on the board nor with the file stored yet."""
    task = Task.objects.select_related("benchmark").get(slug="digits")
    sub = Submission.objects.create(
        owner=owner,
        benchmark=task.benchmark,
        name=name,
        artifact=f"x/{name}.pt2",
        artifact_name="m.pt2",
        artifact_sha256="0" * 64,
        artifact_size=1,
        status=Submission.Status.FINISHED,
        visibility=Submission.Visibility.PUBLIC if public else Submission.Visibility.PRIVATE,
    )
    top1 = 100.0 * (N - len(wrong)) / N
    payload = outcomes_file(wrong)
    job = EvaluationJob.objects.create(
        submission=sub,
        task=task,
        state=EvaluationJob.State.SUCCEEDED,
        result_attempt=1,
        result={
            "metrics": {"top1": top1},
            "ci95": {"top1": [top1 - 2, top1 + 2]},
            "files": {"per_image": {"n": N, "sha256": hashlib.sha256(payload).hexdigest()}},
        },
    )
    job.payload = payload  # type: ignore[attr-defined]
    return sub, job


@pytest.mark.django_db
def test_the_result_s_transaction_opens_no_file_and_the_ties_appear_after_the_worker(
    client, alice, bob, npz_opens
):
    scored(alice, "alice-net", range(0, 20))
    npz_opens.clear()
    sub, job = unscored(bob, "bob-net", [*range(3, 20), *range(100, 105)])
    with TestCase.captureOnCommitCallbacks(execute=False) as callbacks:
        job.per_image.save("outcomes.npz", ContentFile(job.payload), save=False)
        job.save(update_fields=["per_image"])  # as the runner's upload stores it
        board_entry_upsert(job=job, submission=sub)  # as the result's aggregation writes the row
    assert npz_opens == []  # neither the upload's nor the result's transaction read a file
    assert BoardEntry.objects.get(submission=sub).tie_rank is None  # committed, not yet tied
    for callback in callbacks:  # the commit: the worker's refresh (inline here), then the warm
        callback()
    assert len(npz_opens) == 1  # bob's file, compacted once; alice's vectors were already built
    assert ranks(client) == {"alice-net": "=1", "bob-net": "=1"}
    assert BoardEntry.objects.get(submission=sub).paired["b"] == 3


@pytest.mark.django_db
def test_the_refresh_is_sent_once_per_commit_and_before_the_board_s_warm(alice, bob, monkeypatch):
    from leaderboard.boards import tasks

    sent: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(tasks.refresh_ties, "delay", lambda ids: sent.append(("ties", ids)))
    monkeypatch.setattr(tasks.warm_boards, "delay", lambda ids: sent.append(("warm", ids)))
    subs = [
        unscored(owner, name, range(0, 20 + i)) for i, (owner, name) in enumerate(((alice, "a"), (bob, "b")))
    ]
    with TestCase.captureOnCommitCallbacks(execute=True):
        for sub, job in subs:
            board_entry_upsert(job=job, submission=sub)
    digits = Task.objects.get(slug="digits")
    assert sent == [("ties", [digits.pk]), ("warm", [digits.benchmark_id])]


@pytest.mark.django_db
def test_a_refresh_that_fails_or_a_broker_down_never_loses_the_result(client, alice, bob, monkeypatch):
    from leaderboard.boards import tasks

    scored(alice, "alice-net", range(0, 20))

    def broken(*args, **kwargs):
        raise RuntimeError("the refresh fell over")

    monkeypatch.setattr(services, "_ties_compute", broken)  # run inline, the refresh raises
    scored(bob, "bob-net", [*range(3, 20), *range(100, 105)])  # the commit goes through
    monkeypatch.undo()

    def broker_down(ids):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.refresh_ties, "delay", broker_down)
    scored(bob, "carol-net", [*range(2, 20), *range(100, 105)])
    assert ranks(client) == {"alice-net": "1", "bob-net": "≈2", "carol-net": "≈3"}  # interval rule meanwhile
    out = io.StringIO()
    call_command("refresh_ties", "digits", stdout=out)  # what an operator runs after the outage
    assert "digits/digits: 3 rows ranked by the paired test" in out.getvalue()
    assert ranks(client) == {"alice-net": "=1", "bob-net": "=1", "carol-net": "=1"}
    with pytest.raises(CommandError, match="no benchmark nope"):
        call_command("refresh_ties", "digits", "nope")


@pytest.mark.django_db(transaction=True)
def test_two_refreshes_of_one_task_run_one_after_the_other_and_the_last_sees_every_row(
    alice, bob, monkeypatch, catalogue
):
    """Two results of one task arriving together: the second refresh waits for the first's lock,
    then reads every committed row, so the result the first could not see still gets its tie."""
    monkeypatch.setattr(services, "board_ties_refresh_later", lambda *, task: None)  # refreshes by hand
    alice_sub, alice_job = unscored(alice, "alice-net", range(0, 20))
    alice_job.per_image.save("outcomes.npz", ContentFile(alice_job.payload))
    board_entry_upsert(job=alice_job, submission=alice_sub)
    task = Task.objects.select_related("benchmark").get(slug="digits")
    real, holding, release = services._ties_compute, threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def slow_first(task):
        if not holding.is_set():
            holding.set()
            release.wait(10)
            seen["first"] = BoardEntry.objects.filter(task=task, is_public=True).count()
        else:
            seen["second"] = BoardEntry.objects.filter(task=task, is_public=True).count()
        return real(task)

    monkeypatch.setattr(services, "_ties_compute", slow_first)
    first = threading.Thread(target=lambda: (board_ties_refresh(task=task), connection.close()))
    first.start()
    assert holding.wait(10)
    began = time.monotonic()
    bob_sub, bob_job = unscored(bob, "bob-net", [*range(3, 20), *range(100, 105)])  # committed meanwhile
    bob_job.per_image.save("outcomes.npz", ContentFile(bob_job.payload))
    board_entry_upsert(job=bob_job, submission=bob_sub)
    assert time.monotonic() - began < 5  # the result's writes never wait for a refresh's lock
    second = threading.Thread(target=lambda: (board_ties_refresh(task=task), connection.close()))
    second.start()
    time.sleep(0.5)
    assert second.is_alive() and "second" not in seen  # waiting for the first's lock
    release.set()
    first.join(20)
    second.join(20)
    assert not first.is_alive() and not second.is_alive()
    assert seen == {"first": 2, "second": 2}
    marks = dict(BoardEntry.objects.filter(task=task).values_list("submission__name", "tie_rank"))
    assert marks == {"alice-net": 1, "bob-net": 1}


@pytest.mark.django_db
def test_a_new_file_for_a_job_rebuilds_its_vectors_and_a_rerun_drops_them(client, alice, bob):
    from leaderboard.submissions.services import submission_rerun

    scored(alice, "alice-net", range(0, 20))
    bob_sub = scored(bob, "bob-net", [*range(3, 20), *range(100, 105)])
    assert ranks(client) == {"alice-net": "=1", "bob-net": "=1"}
    job = bob_sub.jobs.get()
    old = OutcomeVectors.objects.get(job=job)
    assert old.source == job.per_image.name and old.n_images == N
    with TestCase.captureOnCommitCallbacks(execute=True):
        job.per_image.save("outcomes.npz", ContentFile(outcomes_file(range(20, 80))), save=False)
        job.save(update_fields=["per_image"])  # a new file: bob now misses 60 others
    new = OutcomeVectors.objects.get(job=job)
    assert new.source == job.per_image.name != old.source
    assert int(per_image.right(new).sum()) == N - 60
    assert ranks(client) == {"alice-net": "1", "bob-net": "2"}
    with TestCase.captureOnCommitCallbacks(execute=True):
        submission_rerun(submission_id=bob_sub.pk)
    assert not OutcomeVectors.objects.filter(job__submission=bob_sub).exists()


@pytest.mark.django_db
def test_a_stored_file_whose_bytes_differ_from_the_named_sha256_is_left_out_and_said_why(
    client, alice, bob, caplog
):
    scored(alice, "alice-net", range(0, 20))
    sub, job = unscored(bob, "bob-net", [*range(3, 20), *range(100, 105)])
    with TestCase.captureOnCommitCallbacks(execute=True):
        job.per_image.save(
            "outcomes.npz", ContentFile(outcomes_file(range(0, 22))), save=False
        )  # not those bytes
        job.save(update_fields=["per_image"])
        board_entry_upsert(job=job, submission=sub)
    assert BoardEntry.objects.get(submission=sub).tie_rank is None  # the interval rule, not the wrong file
    assert not OutcomeVectors.objects.filter(job=job).exists()
    assert "differs from the" in caplog.text
    alice_sub = Submission.objects.get(name="alice-net")
    html = client.get(f"/compare/?ids={alice_sub.pk},{sub.pk}").content.decode()
    assert "could not be read" in html and "differs from the" in html


@pytest.mark.django_db
def test_the_compare_and_hardest_pages_read_no_file_on_a_second_request(
    client, settings, alice, bob, npz_opens
):
    settings.PAGE_CACHE_SECONDS = 0  # every request renders: only the vectors may spare the files
    subs = [scored(alice, f"net-{i}", range(i, 20 + 3 * i)) for i in range(5)]
    hidden = scored(
        bob, "hidden-net", range(0, 30), public=False
    )  # no public row: no refresh built its vectors
    npz_opens.clear()
    client.force_login(bob)  # who may see his private submission
    compare = f"/compare/?ids={subs[0].pk},{hidden.pk},{subs[1].pk}"
    first = client.get(compare).context["paired"]["digits"]
    assert npz_opens == [hidden.jobs.get().per_image.name]  # the private file, once; the rest were built
    # hidden-net misses net-0's 20 and 10 more; net-1 gets image 0 right and misses 20-22
    assert [(line.test.b, line.test.c) for line in first] == [(0, 10), (1, 3)]
    npz_opens.clear()
    assert client.get(compare).context["paired"]["digits"] == first and npz_opens == []
    from django.core.cache import cache

    cache.clear()  # the difficulty summary's own cache gone too: it is rebuilt from the vectors
    client.logout()
    response = client.get("/b/digits/hardest/digits/")
    assert response.status_code == 200 and response.context["summary"]["k"] == 5
    failures = client.get(f"/s/{subs[4].pk}/failures/digits/")  # the explorer: its vectors were built too
    assert failures.status_code == 200 and failures.context["groups"]
    assert sum(group["errors"] for group in failures.context["groups"]) == 28  # net-4 misses images 4-31
    assert npz_opens == []


def test_the_vectors_pair_images_exactly_as_paired_align_does_on_the_files():
    """Shuffled files with corruption cells and a second part: the compact form's hits and set
    codes are paired.align's, and its digest tells apart files of other images."""
    rng = np.random.default_rng(0)
    n = 600
    corruption = np.repeat(np.array(["fog", "snow", "gaussian_noise"]), n // 3)
    severity = np.tile(np.repeat(np.array([1, 5]), n // 6), 3)
    index = np.tile(np.arange(n // 6), 6)
    part = np.where(rng.uniform(size=n) < 0.8, "main", "extra")

    def outcomes(seed: int) -> dict[str, np.ndarray]:
        label = rng.integers(0, 10, n)
        pred = np.where(np.random.default_rng(seed).uniform(size=n) < 0.3, (label + 1) % 10, label)
        arrays = {
            "index": index,
            "label": label,
            "pred": pred,
            "top5_hit": pred == label,
            "loss": rng.uniform(0, 3, n),
            "el2n": rng.uniform(0, 1.4, n),
            "corruption": corruption,
            "severity": severity,
            "part": part,
        }
        order = np.random.default_rng(seed + 100).permutation(n)
        return {k: v[order] for k, v in arrays.items()}

    a, b = outcomes(1), outcomes(2)
    va, vb = per_image.vectors_from_arrays(a), per_image.vectors_from_arrays(b)
    aligned = paired.align(a, b)
    per_image.same_images(va, vb)
    np.testing.assert_array_equal(per_image.right(va), aligned.right_a)
    np.testing.assert_array_equal(per_image.right(vb), aligned.right_b)
    np.testing.assert_array_equal(per_image.set_codes(va), aligned.sets)
    assert va.n_images == int((part == "main").sum())
    cols = per_image.columns(va)
    assert cols["corruption"].dtype.kind == "U" and set(cols["corruption"]) == {
        "fog",
        "snow",
        "gaussian_noise",
    }
    np.testing.assert_array_equal(a["el2n"][cols["row"]].astype(np.float32), per_image.el2n(va))
    np.testing.assert_array_equal(a["loss"][cols["row"]].astype(np.float32), cols["loss"])
    np.testing.assert_array_equal(a["pred"][cols["row"]], cols["pred"])
    other = dict(b, index=b["index"] + 1)  # other images
    with pytest.raises(ValueError, match="different images"):
        per_image.same_images(per_image.vectors_from_arrays(other), va)
    fewer = {k: v[:-1] for k, v in a.items()}
    with pytest.raises(ValueError, match="different numbers of images"):
        per_image.same_images(per_image.vectors_from_arrays(fewer), va)
    with pytest.raises(per_image.PerImageError, match="no images of the primary part"):
        per_image.vectors_from_arrays(dict(a, part=np.full(n, "extra")))
    with pytest.raises(per_image.PerImageError, match="lack the array 'pred'"):
        per_image.vectors_from_arrays({k: v for k, v in a.items() if k != "pred"})
