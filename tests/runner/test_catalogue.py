"""The task catalogue as data (runner/catalogue.py): every consumer asks it which track runs a
task, its model input and the keys its results must carry."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner import catalogue
from runner.catalogue import (
    CATALOGUE,
    TRACKS,
    UnknownTask,
    catalogue_benchmark_of,
    catalogue_task,
    required_metrics,
    tasks_of_track,
    training_task_slugs,
)

KIND_OF_TRACK = {"classify": "classifier", "denoise": "denoiser", "synthetic": "optimizer", "train": "optimizer"}


def test_every_task_has_one_track_that_fits_its_benchmark_kind():
    for bench in CATALOGUE:
        for task in bench.tasks:
            assert task.track in TRACKS and KIND_OF_TRACK[task.track] == bench.kind, task.slug
    assert sum(len(tasks_of_track(track)) for track in TRACKS) == sum(len(b.tasks) for b in CATALOGUE)


def test_the_training_tasks_are_the_optimizer_benchmarks_that_train_a_model():
    assert training_task_slugs() == ("opt-digits", "opt-cifar10-resnet18", "opt-cifar100-resnet18",
                                     "opt-text-transformer")


def test_every_classifier_task_knows_its_class_count_and_input_shape():
    for slug in tasks_of_track("classify"):
        task = catalogue_task(slug)
        assert task.num_classes in (10, 100, 1000) and len(task.input_shape) == 3, slug
    assert catalogue_task("digits").input_shape == (1, 8, 8)
    assert catalogue_task("cifar100-c").num_classes == 100
    assert catalogue_task("dollarstreet").input_shape == (3, 224, 224)


def test_every_task_requires_its_primary_metric_in_each_result():
    for bench in CATALOGUE:
        for task in bench.tasks:
            assert task.primary_metric in required_metrics(task.slug), task.slug


def test_a_pool_is_the_queue_without_its_prefix():
    assert catalogue_task("opt-f1").pool == "cpu" and catalogue_task("imagenet-c").pool == "gpu"


def test_an_unknown_task_is_a_lookup_error_that_names_it():
    with pytest.raises(LookupError, match="no task 'mnist' in the catalogue") as caught:
        catalogue_task("mnist")
    assert isinstance(caught.value, UnknownTask) and not isinstance(caught.value, KeyError)
    with pytest.raises(UnknownTask, match="mnist"):
        catalogue_benchmark_of("mnist")
    assert required_metrics("mnist") == ()


def test_the_site_can_read_the_catalogue_without_importing_torch():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, runner.catalogue, runner.spec; "
                               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'django', 'numpy')))"],
        capture_output=True, text=True, check=True, cwd=Path(catalogue.__file__).parents[1],
    )
    assert loaded.stdout.strip() == "[]"
