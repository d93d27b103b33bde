"""REST API v1: thin adapters over the same services and selectors the pages use."""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from leaderboard.benchmarks.models import Benchmark
from leaderboard.boards import selectors as board_selectors
from leaderboard.boards.cache import cached_for_visitors
from leaderboard.runners import selectors as runner_selectors
from leaderboard.submissions import selectors as submission_selectors
from leaderboard.submissions import services as submission_services
from leaderboard.submissions.models import EvaluationJob, Submission

from . import serializers


class BenchmarkList(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(responses=serializers.BenchmarkSerializer(many=True))
    def get(self, request):
        benchmarks = list(Benchmark.objects.filter(is_active=True).prefetch_related("tasks"))
        warnings = runner_selectors.benchmark_warnings(benchmarks=benchmarks)
        return Response(serializers.BenchmarkSerializer(benchmarks, many=True, context={"warnings": warnings}).data)


class BenchmarkDetail(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(responses={200: serializers.BenchmarkSerializer, 404: serializers.ErrorSerializer})
    def get(self, request, slug: str):
        bench = get_object_or_404(Benchmark.objects.prefetch_related("tasks"), slug=slug)
        warnings = runner_selectors.benchmark_warnings(benchmarks=[bench])
        return Response(serializers.BenchmarkSerializer(bench, context={"warnings": warnings}).data)


class Leaderboard(APIView):
    """One task's board. Anonymous reads that get JSON come from the visitors' page cache (warmed
    when the board changes) and answer conditional requests (ETag, Last-Modified); reads with a
    token or a session, which may include the reader's private rows, are never cached and say
    ``Cache-Control: private``. (The benchmark list and detail are not cached: their warnings
    follow the runners' heartbeats, which do not change the board version.)"""

    permission_classes = [permissions.AllowAny]

    @classmethod
    def as_view(cls, **initkwargs):
        return cached_for_visitors(super().as_view(**initkwargs), json_only=True)

    @extend_schema(
        parameters=[serializers.LeaderboardQuerySerializer],
        responses={200: serializers.LeaderboardSerializer, 400: serializers.LeaderboardQueryErrorsSerializer,
                   404: serializers.ErrorSerializer},
    )
    def get(self, request, slug: str):
        query = serializers.LeaderboardQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        bench = get_object_or_404(Benchmark.objects.prefetch_related("tasks"), slug=slug)
        tasks = list(bench.tasks.all())
        wanted = params.get("task")
        task = next((t for t in tasks if t.slug == wanted), None) if wanted else (tasks[0] if tasks else None)
        if task is None:
            raise NotFound(f"benchmark {slug} has no task {wanted!r}" if wanted else "benchmark has no tasks")
        page = board_selectors.board_rows(
            task=task, user=request.user, offset=params["offset"],
            limit=min(params["limit"], query.MAX_LIMIT) or 50, sort=params["sort"],
            descending=None if not params["dir"] else params["dir"] == "desc",
        )
        return Response({
            "benchmark": bench.slug, "task": task.slug, "tasks": [t.slug for t in tasks],
            "primary_metric": task.primary_metric, "higher_is_better": task.higher_is_better,
            "total": page.total, "offset": page.offset, "limit": page.limit,
            "rows": board_selectors.board_as_records(page),
        })


class SubmissionList(APIView):
    parser_classes = [MultiPartParser]  # the artifact is a file: a urlencoded body cannot carry it
    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(responses={200: serializers.SubmissionStatusSerializer(many=True),
                              401: serializers.ErrorSerializer, 403: serializers.ErrorSerializer})
    def get(self, request):
        jobs = Prefetch("jobs", queryset=EvaluationJob.objects.select_related("task", "runner"))
        subs = Submission.objects.filter(owner=request.user).select_related("benchmark").prefetch_related(jobs)[:100]
        reasons = runner_selectors.job_wait_reasons(jobs=[j for s in subs for j in s.jobs.all()])
        return Response([submission_selectors.submission_status(submission=s, jobs=list(s.jobs.all()), reasons=reasons,
                                                                detailed=True)
                         for s in subs])

    @extend_schema(request=serializers.SubmissionCreateSerializer, responses={
        201: serializers.SubmissionStatusSerializer, 400: serializers.FieldErrorsSerializer,
        401: serializers.ErrorSerializer, 403: serializers.ErrorSerializer, 429: serializers.ErrorSerializer,
        503: serializers.ErrorSerializer})
    def post(self, request):
        incoming = serializers.SubmissionCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        try:
            submission = submission_services.submission_create(
                owner=request.user, benchmark=data["benchmark"], name=data["name"], upload=data["artifact"],
                hparams=data["hparams"], description=data["description"], paper_url=data["paper_url"],
                code_url=data["code_url"], model_family=data["model_family"], visibility=data["visibility"],
            )
        except DjangoValidationError as exc:
            if hasattr(exc, "error_dict"):
                raise ValidationError({k: [str(m) for e in v for m in e.messages] for k, v in exc.error_dict.items()}) from exc
            if getattr(exc, "code", "") == "quota":
                return Response({"detail": exc.messages[0]}, status=status.HTTP_429_TOO_MANY_REQUESTS)
            raise ValidationError({"non_field_errors": exc.messages}) from exc
        except submission_services.ArtifactStorageError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        # Said after the upload too, but the benchmark's own answer (GET benchmarks/<slug>/) says it before.
        warnings = runner_selectors.benchmark_warnings(benchmarks=[data["benchmark"]])[data["benchmark"].slug]
        return Response({**submission_selectors.submission_status(submission=submission, detailed=True),
                         "warnings": warnings},
                        status=status.HTTP_201_CREATED)


class SubmissionDetail(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(responses={200: serializers.SubmissionStatusSerializer, 404: serializers.ErrorSerializer})
    def get(self, request, pk: int):
        submission = get_object_or_404(Submission.objects.select_related("benchmark", "owner"), pk=pk)
        if not submission.visible_to(request.user):
            raise NotFound("No such submission.")
        return Response(submission_selectors.submission_status(
            submission=submission, detailed=submission.details_visible_to(request.user)))
