"""Reads about runners and their queues: queue depths, which pools are online and what their
nodes hold, why a waiting job waits, and what to warn about before an upload. Every function
here runs a fixed number of queries, whatever the number of jobs, runners or benchmarks."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.timesince import timesince

from leaderboard.benchmarks.models import Benchmark, Task
from leaderboard.submissions.models import EvaluationJob

from .models import RunnerNode

WAITING_STATES = (EvaluationJob.State.PENDING, EvaluationJob.State.DISPATCHED)
MAX_QUEUE_POSITIONS = 100  # waiting jobs whose place in the queue one call counts (one query)


def queue_depths() -> list[dict]:
    """Per queue: jobs waiting (pending or dispatched) and running."""
    rows = (
        EvaluationJob.objects.values("task__queue")
        .annotate(
            waiting=Count("pk", filter=Q(state__in=[EvaluationJob.State.PENDING, EvaluationJob.State.DISPATCHED])),
            running=Count("pk", filter=Q(state=EvaluationJob.State.RUNNING)),
        )
        .order_by("task__queue")
    )
    return [{"queue": r["task__queue"], "waiting": r["waiting"], "running": r["running"]} for r in rows]


def pool_of(queue: str) -> str:
    """The pool a queue serves: ``runner.gpu`` → ``gpu``."""
    return queue.removeprefix("runner.")


@dataclass
class PoolState:
    """One pool now: its online nodes, which of them run a job, and when a node of it was last
    heard from (online or not)."""

    name: str
    online: list[RunnerNode] = field(default_factory=list)
    busy: set[int] = field(default_factory=set)
    last_seen: datetime | None = None
    last_seen_by: str = ""

    def holders(self, dataset: str) -> list[RunnerNode]:
        """Online nodes that hold ``dataset`` (every online node when the task needs none)."""
        return [n for n in self.online if not dataset or dataset in n.dataset_names]

    def idle(self, nodes: Iterable[RunnerNode]) -> list[RunnerNode]:
        return [n for n in nodes if n.pk not in self.busy]

    def only_synthetic(self, dataset: str) -> bool:
        """Every online holder of ``dataset`` holds a synthetic copy."""
        held = [n.holding(dataset) for n in self.holders(dataset)] if dataset else []
        return bool(held) and all(h and h.get("synthetic") for h in held)


def pools_now(*, with_busy: bool = True) -> dict[str, PoolState]:
    """Every pool some active node serves, by name. One query for the nodes, one for the busy
    ones (skipped with ``with_busy=False``)."""
    cutoff = timezone.now() - timedelta(seconds=settings.RUNNER_OFFLINE_AFTER_SECONDS)
    busy = set(EvaluationJob.objects.filter(state=EvaluationJob.State.RUNNING, runner__isnull=False)
               .values_list("runner_id", flat=True)) if with_busy else set()
    pools: dict[str, PoolState] = {}
    nodes = RunnerNode.objects.filter(is_active=True).only("pk", "name", "pools", "datasets", "device",
                                                            "last_heartbeat")
    for node in nodes:
        for name in node.pools or []:
            state = pools.setdefault(name, PoolState(name, busy=busy))
            if node.last_heartbeat is None:
                continue
            if state.last_seen is None or node.last_heartbeat > state.last_seen:
                state.last_seen, state.last_seen_by = node.last_heartbeat, node.name
            if node.last_heartbeat >= cutoff:
                state.online.append(node)
    return pools


@dataclass(frozen=True)
class WaitReason:
    """Why a job waits. ``code``: ``no_runner_online``, ``no_runner_with_data``, ``jobs_ahead`` or
    ``next_in_line``; ``message``: the sentence its page shows."""

    code: str
    message: str
    pool: str
    jobs_ahead: int | None = None
    last_seen: datetime | None = None
    last_seen_by: str = ""

    @property
    def seen(self) -> str:
        """When a node of the pool was last heard from, in words."""
        if self.last_seen is None:
            return "none has ever reported"
        return f"last seen {timesince(self.last_seen)} ago: {self.last_seen_by}"

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "pool": self.pool, "jobs_ahead": self.jobs_ahead,
                "last_seen": self.last_seen.isoformat() if self.last_seen else None}


def data_title(task: Task) -> str:
    return f"the {task.title} data (dataset {task.dataset})"


def task_blocker(task: Task, pools: dict[str, PoolState]) -> WaitReason | None:
    """What stops any runner from taking a job of ``task`` now: no node of its pool online, or no
    online node holding its dataset; None when some online node could take it."""
    pool = pool_of(task.queue)
    state = pools.get(pool) or PoolState(pool)
    if not state.online:
        reason = WaitReason("no_runner_online", "", pool, last_seen=state.last_seen, last_seen_by=state.last_seen_by)
        return replace(reason, message=f"no runner of pool {pool} online ({reason.seen})")
    if not state.holders(task.dataset):
        return WaitReason("no_runner_with_data", f"no online runner holds {data_title(task)}", pool)
    return None


def job_wait_reasons(*, jobs: Iterable[EvaluationJob], pools: dict[str, PoolState] | None = None
                     ) -> dict[int, WaitReason]:
    """Why each waiting (pending or dispatched) job of ``jobs`` waits, by job id; ``jobs`` carry
    their task. Three queries at most, whatever the number of jobs: the nodes, the busy nodes, and
    one count of the jobs ahead of each (in its queue, by age; jobs that no online runner can take
    are not ahead of anyone)."""
    waiting = [j for j in jobs if j.state in WAITING_STATES]
    if not waiting:
        return {}
    pools = pools_now() if pools is None else pools
    reasons: dict[int, WaitReason] = {}
    placed = []
    for job in waiting:
        blocker = task_blocker(job.task, pools)
        if blocker is not None:
            reasons[job.pk] = blocker
        else:
            placed.append(job)
    counts = {}
    if placed:
        counted = placed[:MAX_QUEUE_POSITIONS]
        servable = Q()
        for queue in {j.task.queue for j in counted}:
            held = set().union(*(n.dataset_names for n in pools[pool_of(queue)].online))
            servable |= Q(task__queue=queue) & (Q(task__dataset="") | Q(task__dataset__in=held))
        counts = EvaluationJob.objects.filter(servable, state__in=WAITING_STATES).aggregate(**{
            f"j{j.pk}": Count("pk", filter=Q(task__queue=j.task.queue, pk__lt=j.pk)) for j in counted
        })
    for job in placed:
        pool = pools[pool_of(job.task.queue)]
        ahead = counts.get(f"j{job.pk}")
        if ahead is None:
            reasons[job.pk] = WaitReason("jobs_ahead", f"waiting in the {pool.name} queue", pool.name)
        elif ahead:
            reasons[job.pk] = WaitReason("jobs_ahead", f"{ahead} job{'s' if ahead != 1 else ''} ahead in the "
                                         f"{pool.name} queue", pool.name, jobs_ahead=ahead)
        else:
            holders = pool.holders(job.task.dataset)
            if pool.idle(holders):
                message = f"next in line: an idle runner of pool {pool.name} should take it shortly"
            else:
                message = (f"next in line: the {len(holders)} runner{'s' if len(holders) != 1 else ''} of pool "
                           f"{pool.name} that can take it {'are' if len(holders) != 1 else 'is'} busy")
            reasons[job.pk] = WaitReason("next_in_line", message, pool.name, jobs_ahead=0)
    return reasons


def benchmark_warnings(*, benchmarks: Iterable[Benchmark], pools: dict[str, PoolState] | None = None
                       ) -> dict[str, list[str]]:
    """What to tell a submitter before the upload, by benchmark slug: tasks no online runner can
    serve now (they will wait until one can), and tasks whose online runners hold only a
    synthetic copy of the data. ``benchmarks`` should carry their tasks prefetched; one query for
    the nodes."""
    pools = pools_now(with_busy=False) if pools is None else pools
    out: dict[str, list[str]] = {}
    for bench in benchmarks:
        blocked: dict[tuple[str, str], list[str]] = {}
        synthetic: list[str] = []
        for task in bench.tasks.all():
            blocker = task_blocker(task, pools)
            if blocker is not None:
                key = (blocker.code, blocker.message if blocker.code == "no_runner_online" else task.dataset)
                blocked.setdefault(key, []).append(task.title)
            elif task.dataset and pools[pool_of(task.queue)].only_synthetic(task.dataset):
                synthetic.append(task.title)
        notes = []
        for (code, detail), titles in blocked.items():
            what = ", ".join(titles)
            if code == "no_runner_online":
                notes.append(f"{detail[0].upper()}{detail[1:]}: {what} will wait until one comes online.")
            else:
                notes.append(f"No online runner holds the data of {what} (dataset {detail}): "
                             f"{'they' if len(titles) > 1 else 'it'} will wait until one does.")
        if synthetic:
            notes.append(f"The online runners hold only synthetic copies of the data of {', '.join(synthetic)}: "
                         "those results will be labelled synthetic data.")
        out[bench.slug] = notes
    return out
