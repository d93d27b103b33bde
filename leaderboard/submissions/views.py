from __future__ import annotations

import hashlib
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from leaderboard.boards.cache import cached_for_visitors, kept_version, submission_version_key

from . import selectors, services
from .forms import SubmissionForm
from .models import EvaluationJob, Submission


@login_required
def submit(request):
    quota = services.user_quota(user=request.user)
    initial = {"benchmark": request.GET.get("benchmark")} if request.GET.get("benchmark") else None
    form = SubmissionForm(request.POST or None, request.FILES or None, initial=initial)
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            submission = services.submission_create(
                owner=request.user, benchmark=data["benchmark"], name=data["name"], upload=data["artifact"],
                hparams=data["hparams"], description=data["description"], paper_url=data["paper_url"],
                code_url=data["code_url"], model_family=data["model_family"], visibility=data["visibility"],
            )
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                form.add_error(None, exc)
            else:
                form.add_error(None, exc.messages[0])
        except services.ArtifactStorageError as exc:  # our fault: the form comes back filled in
            form.add_error(None, str(exc))
            status = 503
        else:
            messages.success(request, f"Submission #{submission.pk} received; it is being validated.")
            for note in benchmark_notes().get(submission.benchmark.slug, {}).get("notes", []):
                messages.warning(request, note)
            return redirect(submission)
    return render(request, "submissions/submit.html", {"form": form, "quota": quota,
                                                       "benchmark_notes": benchmark_notes()}, status=status)


def benchmark_notes() -> dict[str, dict]:
    """Per active benchmark with something to warn about before an upload (no online runner can
    serve a task, or only synthetic data is held): {"title", "notes"}. Three queries."""
    from leaderboard.benchmarks.models import Benchmark
    from leaderboard.runners.selectors import benchmark_warnings

    benchmarks = list(Benchmark.objects.filter(is_active=True).prefetch_related("tasks"))
    warnings = benchmark_warnings(benchmarks=benchmarks)
    return {b.slug: {"title": b.title, "notes": warnings[b.slug]} for b in benchmarks if warnings[b.slug]}


def visible_submission(request, pk: int) -> Submission:
    """The submission, or 404 when there is none or this user may not see it."""
    submission = get_object_or_404(Submission.objects.select_related("benchmark", "owner"), pk=pk)
    if not submission.visible_to(request.user):
        raise Http404("No such submission.")
    return submission


def submission_page_scope(request: HttpRequest, kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """The page cache's scope and version of a submission page (leaderboard/boards/cache.py). The
    permalink carries the scheme and host, so both are part of the scope. The version is kept in the cache
    (no query on a hit), forgotten whenever the submission or one of its jobs is saved
    (boards/versions.py), and otherwise read again after ``PAGE_CACHE_STALE_SECONDS``. None (the
    view answers) for a submission the visitor may not see."""
    pk = kwargs["pk"]
    scope = f"s{pk}@{request.scheme}://{request.get_host()}"
    version = kept_version(request, scope, submission_version_key(pk), lambda: submission_page_version(pk))
    return None if version is None else (scope, version)


def submission_page_version(pk: int) -> str | None:
    """The digest of everything a public submission's page shows besides its live status (the
    submission's row, owner and benchmark; its jobs' states, attempts and results' attempts), so a
    new result, a rerun, a rename or a change of visibility gives a new version; None when it is
    not public. Two queries."""
    row = (Submission.objects.filter(pk=pk)
           .values("visibility", "updated_at", "status", "name", "description", "paper_url", "code_url",
                   "model_family", "is_baseline", "hparams", "error_message", "finished_at",
                   "owner__username", "benchmark__slug", "benchmark__title").first())
    if row is None or row["visibility"] != Submission.Visibility.PUBLIC:
        return None
    jobs = list(EvaluationJob.objects.filter(submission_id=pk).order_by("pk")
                .values_list("pk", "state", "attempt", "result_attempt", "error_kind", "finished_at"))
    digest = hashlib.sha256(repr((sorted(row.items()), jobs)).encode()).hexdigest()[:32]
    return "s" + digest  # "s": never read as a board version's time


@cached_for_visitors(scope=submission_page_scope)
def detail(request, pk: int):
    """A submission's page. Visitors get it from the page cache; its live part (status, progress,
    each job's state and waiting reason) is refreshed by static/js/live-status.js from status.json
    as soon as the page loads, and polled until the submission ends."""
    from leaderboard.boards.page_charts import submission_figures

    submission = visible_submission(request, pk)
    jobs = list(submission.jobs.select_related("task", "runner"))
    status = selectors.submission_status(submission=submission, jobs=jobs,
                                         detailed=submission.details_visible_to(request.user))
    succeeded = [job for job in jobs if job.state == EvaluationJob.State.SUCCEEDED]
    figures = submission_figures(submission=submission, jobs=succeeded)
    return render(request, "submissions/detail.html", {
        "submission": submission,
        "status": status,
        "charts": figures,
        "samples": selectors.denoising_samples(jobs=succeeded),
        "can_cancel": submission.is_active and (request.user == submission.owner or request.user.is_staff),
    })


def sample_png(request, pk: int, job_id: int, index: int, kind: str):
    """One noisy / denoised / clean crop of a denoising result, as an image the page loads lazily."""
    submission = visible_submission(request, pk)
    job = get_object_or_404(submission.jobs.select_related("task"), pk=job_id, state="succeeded")
    data = selectors.denoising_sample_png(job=job, index=index, kind=kind)
    if data is None:
        raise Http404("No such crop.")
    response = HttpResponse(data, content_type="image/png")
    # private: a shared cache must not keep serving a crop after its submission is made private
    response["Cache-Control"] = "private, max-age=3600"
    return response


def status_json(request, pk: int):
    """What the submission page polls to update itself without reloading."""
    submission = visible_submission(request, pk)
    return JsonResponse(selectors.submission_status(submission=submission,
                                                    detailed=submission.details_visible_to(request.user)))


@login_required
@require_POST
def cancel(request, pk: int):
    submission = visible_submission(request, pk)
    if request.user != submission.owner and not request.user.is_staff:
        raise Http404("No such submission.")
    services.submission_cancel(submission_id=submission.pk)
    messages.info(request, "Submission cancelled; it does not count against your quota.")
    return redirect(submission)


@login_required
def mine(request):
    submissions = Submission.objects.filter(owner=request.user).select_related("benchmark")[:200]
    return render(request, "submissions/mine.html", {
        "submissions": submissions, "quota": services.user_quota(user=request.user),
    })
