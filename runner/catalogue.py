"""The task catalogue: every benchmark and task the platform runs, as one table of data
(shared/PROTOCOLS.md "Task catalogue"; slugs are part of the contract). Pure Python (no torch, no
Django): the site loads it into its database (leaderboard/benchmarks/services.py) and reads it for
its boards; the runner picks a task's track, its model input and its required metrics from it,
and a local dry run reads task parameters from it. Nothing else names a task by its slug.

Public names:

- :class:`CatalogueTask`: ``slug``, ``title``, ``track`` (one of :data:`TRACKS`: ``"classify"``,
  ``"denoise"``, ``"synthetic"``, ``"train"``), ``dataset`` (the dataset id a runner must hold;
  ``""`` for none), ``queue`` (the Celery queue, ``"runner.cpu"``) and ``pool`` (the same without
  ``runner.``), ``time_limit_s`` (seconds), ``primary_metric``, ``higher_is_better``,
  ``num_classes`` (width of a classifier's output; None where the task has no classes),
  ``input_shape`` ((C, H, W) of one model input; None where it varies), ``required_metrics`` and
  ``required_curves`` (the keys every result must carry), ``params`` (what the job spec carries).
- :class:`CatalogueBenchmark`: ``slug``, ``title``, ``kind`` (the submission kind), ``description``,
  ``tasks``; its ``primary_metric`` and ``higher_is_better`` are its first task's.
- :data:`CATALOGUE`: every benchmark, in display order.
- :func:`catalogue_task(slug) <catalogue_task>` → CatalogueTask and :func:`catalogue_benchmark_of`;
  both raise :class:`UnknownTask` (a LookupError) naming the slug.
- :func:`tasks_of_track(track) <tasks_of_track>`, :func:`training_task_slugs`: slugs in catalogue order;
  :func:`track_of(slug) <track_of>`: a task's track, None for a slug the catalogue lacks.
- :func:`required_metrics`, :func:`required_curves`: by slug; () for a task the catalogue lacks.
- :data:`LOWER_IS_BETTER_METRICS`: the metric keys a board sorts ascending.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRACKS = ("classify", "denoise", "synthetic", "train")


class UnknownTask(LookupError):
    """A task or benchmark slug the catalogue does not hold."""

    def __str__(self) -> str:  # a plain message, not KeyError's quoted repr
        return str(self.args[0]) if self.args else "unknown task"


@dataclass(frozen=True)
class CatalogueTask:
    slug: str
    title: str
    track: str
    dataset: str
    queue: str
    time_limit_s: int
    primary_metric: str
    higher_is_better: bool
    required_metrics: tuple[str, ...]
    required_curves: tuple[str, ...] = ()
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.track not in TRACKS:
            raise ValueError(f"{self.slug}: track {self.track!r} is not one of {', '.join(TRACKS)}")

    @property
    def pool(self) -> str:
        """The runner pool that serves this task (``cpu``, ``gpu``): the queue without ``runner.``."""
        return self.queue.removeprefix("runner.")


@dataclass(frozen=True)
class CatalogueBenchmark:
    slug: str
    title: str
    kind: str
    description: str
    tasks: tuple[CatalogueTask, ...]

    @property
    def primary_metric(self) -> str:
        return self.tasks[0].primary_metric

    @property
    def higher_is_better(self) -> bool:
        return self.tasks[0].higher_is_better


# Metrics where less is better (a board column sorts them ascending first); every other is "more".
LOWER_IS_BETTER_METRICS = frozenset({
    "final_loss", "min_loss", "corruption_error", "mce", "relative_mce", "disparity", "gap_europe_africa",
    "income_gap", "seconds_per_megapixel", "epochs_to_target_mean", "seconds_to_target_mean",
    "samples_to_target_mean", "test_top1_std",
    "val_bpb_mean", "val_bpb_std", "best_val_bpb_mean", "best_val_bpb_std", "final_train_loss_mean",
})

# --------------------------------------------------------------------------------------------
# The table. Helpers below only fill in what every task of a family shares.
# --------------------------------------------------------------------------------------------
DIGITS_SHAPE = (1, 8, 8)
CIFAR_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)

TOP = ("top1", "top5")
CORRUPTED = ("top1", "corruption_error")
GEOGRAPHIC = ("top1", "top5", "worst_region_top1", "disparity", "gap_europe_africa")
TRAINED = ("test_top1_mean", "test_top1_std", "best_top1_mean")
TEXT_TRAINED = ("val_bpb_mean", "val_bpb_std", "best_val_bpb_mean", "best_val_bpb_std", "final_train_loss_mean",
                "runs")


def _classifier(slug: str, title: str, dataset: str, classes: int, shape: tuple[int, int, int],
                metrics: tuple[str, ...] = TOP, *, primary: str = "top1", higher: bool = True,
                limit: int = 3600) -> CatalogueTask:
    # The job's params carry num_classes too: the dataset readers take it from there.
    return CatalogueTask(slug, title, "classify", dataset, "runner.gpu", limit, primary, higher, metrics,
                         num_classes=classes, input_shape=shape, params={"num_classes": classes})


_DENOISE_SETS = {
    "bsd68": ("BSD68 (grayscale)", 1),
    "set12": ("Set12 (grayscale)", 1),
    "cbsd68": ("CBSD68 (colour)", 3),
    "kodak": ("Kodak (colour)", 3),
    "skimage-gray": ("scikit-image photographs (grayscale)", 1),
    "skimage-color": ("scikit-image photographs (colour)", 3),
}
_NOISES = {
    "gauss25": ("Gaussian σ=25", {"family": "gaussian", "level": 25.0}),
    "gauss50": ("Gaussian σ=50", {"family": "gaussian", "level": 50.0}),
    "poisson0.01": ("Poisson ζ=0.01", {"family": "poisson", "level": 0.01}),
    "poisson0.05": ("Poisson ζ=0.05", {"family": "poisson", "level": 0.05}),
    "gamma100": ("Gamma k=100", {"family": "gamma", "level": 100.0}),
    "gamma50": ("Gamma k=50", {"family": "gamma", "level": 50.0}),
}


def _denoise_benchmark(name: str) -> CatalogueBenchmark:
    title, channels = _DENOISE_SETS[name]
    on_cpu = name.startswith("skimage")
    tasks = tuple(
        CatalogueTask(
            f"denoise-{name}-{noise}", f"{title}, {noise_title}", "denoise", f"denoise/{name}",
            "runner.cpu" if on_cpu else "runner.gpu", 1800, "psnr", True, ("psnr", "ssim"),
            params={"set": name, "channels": channels, **noise_params},
        )
        for noise, (noise_title, noise_params) in _NOISES.items()
    )
    return CatalogueBenchmark(
        f"denoise-{name}", f"Denoising: {title}", "denoiser",
        f"Blind denoising on {title} under the Noise2Score protocol's six noise settings; PSNR "
        "and SSIM per image, averaged.", tasks,
    )


def _synthetic(n: int) -> CatalogueTask:
    return CatalogueTask(f"opt-f{n}", f"diffGrad synthetic function F{n}", "synthetic", "", "runner.cpu", 120,
                         "final_loss", False, ("final_x", "final_loss", "min_loss"), ("trajectory",),
                         params={"function": f"f{n}", "x0": -1.0, "steps": 300})


def _training(slug: str, title: str, dataset: str, queue: str, limit: int, classes: int,
              shape: tuple[int, int, int], **params: Any) -> CatalogueTask:
    return CatalogueTask(slug, title, "train", dataset, queue, limit, "test_top1_mean", True, TRAINED,
                         num_classes=classes, input_shape=shape, params=params)


CATALOGUE: tuple[CatalogueBenchmark, ...] = (
    CatalogueBenchmark(
        "opt-synthetic", "Optimizers: diffGrad's synthetic functions", "optimizer",
        "One parameter from θ0 = −1, 300 steps on the three non-convex functions of the diffGrad "
        "paper; lower final loss is better.", (_synthetic(1), _synthetic(2), _synthetic(3)),
    ),
    CatalogueBenchmark(
        "opt-digits", "Optimizers: small CNN on scikit-learn digits", "optimizer",
        "A fixed-budget small CNN on the 1,797 real handwritten digits, 5 seeds; final test top-1.",
        (_training("opt-digits", "Small CNN on digits", "sklearn-digits", "runner.cpu", 900, 10, DIGITS_SHAPE,
                   epochs=20, batch_size=64, seeds=5, target_top1=95.0),),
    ),
    CatalogueBenchmark(
        "opt-cifar10-resnet18", "Optimizers: CIFAR-10 ResNet-18", "optimizer",
        "CIFAR ResNet-18 on a fixed epoch budget, 3 seeds; final and best test top-1, time to "
        "target; checkpoints are also scored on CIFAR-10-C.",
        (_training("opt-cifar10-resnet18", "CIFAR-10 ResNet-18", "cifar-10-batches-py", "runner.gpu",
                   4 * 3600, 10, CIFAR_SHAPE, epochs=10, batch_size=128, seeds=3, target_top1=85.0),),
    ),
    CatalogueBenchmark(
        "opt-cifar100-resnet18", "Optimizers: CIFAR-100 ResNet-18", "optimizer",
        "CIFAR ResNet-18 on a fixed epoch budget, 3 seeds; final and best test top-1, time to target.",
        (_training("opt-cifar100-resnet18", "CIFAR-100 ResNet-18", "cifar-100-python", "runner.gpu",
                   4 * 3600, 100, CIFAR_SHAPE, epochs=10, batch_size=128, seeds=3, target_top1=55.0),),
    ),
    CatalogueBenchmark(
        "opt-text-transformer", "Optimizers: byte-level transformer on CPython's pydoc text", "optimizer",
        "A 0.9M-parameter byte-level transformer language model trained on the help topics that ship with "
        "CPython (pydoc_data), 800 steps of 32 × 128 bytes with the runner's warm-up and cosine schedule, "
        "3 seeds on 2 CPU cores; validation bits per byte, lower is better.",
        (CatalogueTask("opt-text-transformer", "Byte-level transformer on pydoc text", "train", "pydoc-topics",
                       # 3 × 800 steps: 6-15 minutes on 2 quiet cores (PROTOCOLS); a node loaded to 6
                       # was measured at 1.9 s a step, so an hour keeps a fair run from the limit
                       "runner.cpu", 3600, "val_bpb_mean", False, TEXT_TRAINED,
                       params={"steps": 800, "batch_size": 32, "context": 128, "warmup_steps": 50,
                               "eval_every": 50, "seeds": 3, "threads": 2}),),
    ),
    CatalogueBenchmark(
        "digits", "Classifiers: scikit-learn digits", "classifier",
        "The 1,797 real handwritten 8×8 digits bundled with scikit-learn; a fixed test split.",
        (CatalogueTask("digits", "Digits test split", "classify", "sklearn-digits", "runner.cpu", 300, "top1",
                       True, TOP, num_classes=10, input_shape=DIGITS_SHAPE,
                       params={"test_fraction": 0.25, "split_seed": 0}),),
    ),
    CatalogueBenchmark(
        "cifar10", "Classifiers: CIFAR-10 and CIFAR-10-C", "classifier",
        "CIFAR-10 test top-1 and mean accuracy over the 15 corruptions × 5 severities of CIFAR-10-C.",
        (_classifier("cifar10", "CIFAR-10 test", "cifar-10-batches-py", 10, CIFAR_SHAPE),
         _classifier("cifar10-c", "CIFAR-10-C", "CIFAR-10-C", 10, CIFAR_SHAPE, CORRUPTED)),
    ),
    CatalogueBenchmark(
        "cifar100", "Classifiers: CIFAR-100 and CIFAR-100-C", "classifier",
        "CIFAR-100 test top-1 and mean accuracy over the 15 corruptions × 5 severities of CIFAR-100-C.",
        (_classifier("cifar100", "CIFAR-100 test", "cifar-100-python", 100, CIFAR_SHAPE),
         _classifier("cifar100-c", "CIFAR-100-C", "CIFAR-100-C", 100, CIFAR_SHAPE, CORRUPTED)),
    ),
    CatalogueBenchmark(
        "imagenet", "Classifiers: ImageNet and its shifts", "classifier",
        "ImageNet val top-1, ImageNet-A, ImageNet-R, ImageNet-C (mCE, AlexNet-normalized) and "
        "the geographic-shift sets GeoDE and Dollar Street, with per-region accuracy and disparity.",
        (_classifier("imagenet-val", "ImageNet validation", "imagenet/val", 1000, IMAGENET_SHAPE),
         _classifier("imagenet-a", "ImageNet-A", "imagenet-a", 1000, IMAGENET_SHAPE),
         _classifier("imagenet-r", "ImageNet-R", "imagenet-r", 1000, IMAGENET_SHAPE, (*TOP, "imagenet200_top1")),
         _classifier("imagenet-c", "ImageNet-C", "imagenet-c", 1000, IMAGENET_SHAPE, (*CORRUPTED, "mce"),
                     primary="mce", higher=False, limit=6 * 3600),
         _classifier("geode", "GeoDE", "geode", 1000, IMAGENET_SHAPE, GEOGRAPHIC),
         _classifier("dollarstreet", "Dollar Street", "dollarstreet", 1000, IMAGENET_SHAPE,
                     (*GEOGRAPHIC, "income_gap"))),
    ),
    *(_denoise_benchmark(name) for name in _DENOISE_SETS),
)

_TASKS: dict[str, CatalogueTask] = {task.slug: task for bench in CATALOGUE for task in bench.tasks}
_BENCHMARK_OF: dict[str, CatalogueBenchmark] = {task.slug: bench for bench in CATALOGUE for task in bench.tasks}


# --------------------------------------------------------------------------------------------
# Lookups.
# --------------------------------------------------------------------------------------------
def catalogue_task(slug: str) -> CatalogueTask:
    """The task called ``slug``. Raises UnknownTask (a LookupError) naming it."""
    try:
        return _TASKS[slug]
    except (KeyError, TypeError):
        raise UnknownTask(f"no task {slug!r} in the catalogue") from None


def catalogue_benchmark_of(task_slug: str) -> CatalogueBenchmark:
    """The benchmark that holds task ``task_slug``. Raises UnknownTask (a LookupError) naming it."""
    try:
        return _BENCHMARK_OF[task_slug]
    except (KeyError, TypeError):
        raise UnknownTask(f"no task {task_slug!r} in the catalogue") from None


def tasks_of_track(track: str) -> tuple[str, ...]:
    """The slugs of every task that ``track`` (one of TRACKS) evaluates, in catalogue order.
    Raises ValueError for an unknown track."""
    if track not in TRACKS:
        raise ValueError(f"no track {track!r}; the tracks are {', '.join(TRACKS)}")
    return tuple(slug for slug, task in _TASKS.items() if task.track == track)


def track_of(slug: str) -> str | None:
    """The track that evaluates task ``slug`` (one of TRACKS), or None for a slug the catalogue
    lacks (a task a maintainer added by hand, which no runner evaluates)."""
    task = _TASKS.get(slug)
    return task.track if task else None


def training_task_slugs() -> tuple[str, ...]:
    """The optimizer tasks scored by training a model (the ``train`` track), in catalogue order."""
    return tasks_of_track("train")


def required_metrics(task_slug: str) -> tuple[str, ...]:
    """The metric keys every result of this task must carry; () for a task the catalogue lacks
    (a maintainer's extra task: the result must still carry some metric)."""
    task = _TASKS.get(task_slug)
    return task.required_metrics if task else ()


def required_curves(task_slug: str) -> tuple[str, ...]:
    """The curve keys every result of this task must carry; () for a task the catalogue lacks."""
    task = _TASKS.get(task_slug)
    return task.required_curves if task else ()
