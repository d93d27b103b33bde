from __future__ import annotations

import pytest
from django.core.management import call_command

from leaderboard.submissions.models import Submission

pytestmark = pytest.mark.django_db


def test_the_reference_optimizers_are_seeded_once_as_baselines_with_their_settings(catalogue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_baselines")
    call_command("seed_baselines")
    synthetic = Submission.objects.filter(benchmark__slug="opt-synthetic")
    assert synthetic.count() == 9 and all(s.is_baseline for s in synthetic)
    names = set(synthetic.values_list("name", flat=True))
    assert {"diffGrad (corrected)", "Adam", "AdamW", "AMSGrad", "AdaGrad", "AdaDelta", "RMSProp",
            "SGD with momentum", "L-BFGS"} == names  # of the seed methods, only L-BFGS applies in one dimension
    diffgrad = synthetic.get(name="diffGrad (corrected)")
    assert diffgrad.hparams["lr"] == 0.1 and diffgrad.status == Submission.Status.QUEUED
    assert Submission.objects.get(benchmark__slug="opt-digits", name="Adam").hparams["lr"] == 0.001
    digits = Submission.objects.filter(benchmark__slug="digits", is_baseline=True)
    assert {(s.name, s.artifact_format) for s in digits} == {("Small CNN (TorchScript)", "torchscript"),
                                                             ("Small CNN (ONNX)", "onnx")}
    for board in ("denoise-skimage-gray", "denoise-skimage-color"):
        denoisers = Submission.objects.filter(benchmark__slug=board, is_baseline=True)
        assert {(s.name, s.artifact_format, s.status) for s in denoisers} == {
            ("Noisy input (identity)", "torchscript", Submission.Status.QUEUED),
            ("Gaussian filter (width tuned per setting)", "torchscript", Submission.Status.QUEUED),
            ("Median filter (window tuned per setting)", "torchscript", Submission.Status.QUEUED),
            ("Noise2Score (shipped CPU checkpoint)", "torchscript", Submission.Status.QUEUED),
            ("BM3D (VST for Poisson and Gamma)", "builtin", Submission.Status.QUEUED),
        }
        assert all(s.jobs.count() == 6 for s in denoisers)  # the six noise settings


def test_seed_baselines_takes_one_board_of_any_kind(catalogue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_baselines", "--benchmark", "denoise-skimage-color")
    assert set(Submission.objects.values_list("benchmark__slug", flat=True)) == {"denoise-skimage-color"}
    assert Submission.objects.count() == 5


def test_seed_baselines_submits_the_classifiers_a_manifest_lists_once(catalogue, tmp_path,
                                                                      django_capture_on_commit_callbacks):
    """The demo's trained models arrive this way: files beside a manifest in baselines.json's schema."""
    import json
    import shutil

    from runner.baselines.classifiers import FOLDER

    shutil.copy(FOLDER / "digits_cnn.pt", tmp_path / "model.pt")
    entry = {"file": "model.pt", "name": "Tiny CNN (demo, synthetic training data)", "benchmark": "cifar10",
             "family": "demo model trained on synthetic images", "description": "demo material", "hparams": {}}
    (tmp_path / "baselines.json").write_text(json.dumps({"schema": 1, "baselines": [entry]}))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_baselines", "--manifest", str(tmp_path / "baselines.json"))
    call_command("seed_baselines", "--manifest", str(tmp_path / "baselines.json"))
    seeded = Submission.objects.get()
    assert (seeded.benchmark.slug, seeded.name, seeded.is_baseline) == ("cifar10", entry["name"], True)
    assert seeded.model_family == entry["family"] and seeded.jobs.count() == 2  # CIFAR-10 and CIFAR-10-C


def test_seed_baselines_names_an_unknown_board_or_manifest_and_submits_nothing(catalogue, tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no benchmark 'nope'; run loadbenchmarks first"):
        call_command("seed_baselines", "--benchmark", "nope")
    with pytest.raises(CommandError, match="no manifest at"):
        call_command("seed_baselines", "--manifest", str(tmp_path / "missing.json"))
    assert not Submission.objects.exists()


def test_an_optimizer_is_seeded_only_on_the_boards_its_manifest_entry_lists(catalogue,
                                                                            django_capture_on_commit_callbacks):
    """The seed methods that need the runner's hooks train only on the CPU training board; L-BFGS
    (a closure) also runs the synthetic functions; clipping also the GPU boards and the transformer."""
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_baselines", "--benchmark", "opt-synthetic", "--benchmark", "opt-digits",
                     "--benchmark", "opt-cifar10-resnet18", "--benchmark", "opt-text-transformer")
    seeded = {slug: set(Submission.objects.filter(benchmark__slug=slug).values_list("name", flat=True))
              for slug in ("opt-synthetic", "opt-digits", "opt-cifar10-resnet18", "opt-text-transformer")}
    references = {"diffGrad (corrected)", "Adam", "AdamW", "AMSGrad", "AdaGrad", "AdaDelta", "RMSProp",
                  "SGD with momentum"}
    seed_methods = {"TrAct + SGD with momentum", "TrAct + Adam", "AdAdaGrad (coordinate-wise test)",
                    "AdAdaGradNorm (norm test)", "SGD with coordinate-wise clipping",
                    "Adam with coordinate-wise clipping", "L-BFGS", "EL2N data diet (keep 50 %)",
                    "GraNd data diet (keep 50 %)"}
    assert seeded["opt-synthetic"] == references | {"L-BFGS"}
    assert seeded["opt-digits"] == references | seed_methods
    assert seeded["opt-cifar10-resnet18"] == references | {"SGD with coordinate-wise clipping",
                                                           "Adam with coordinate-wise clipping"}
    assert seeded["opt-text-transformer"] == seeded["opt-cifar10-resnet18"]
    clipped = Submission.objects.get(benchmark__slug="opt-text-transformer", name="SGD with coordinate-wise clipping")
    assert clipped.hparams == {"lr": 10, "momentum": 0.9, "c": 0.1}  # PROTOCOLS' best of its grid
    tract = Submission.objects.get(benchmark__slug="opt-digits", name="TrAct + Adam")
    assert tract.hparams == {"lr": 0.001, "lam": 0.1} and tract.model_family == "seed method"
    assert Submission.objects.get(benchmark__slug="opt-synthetic", name="L-BFGS").hparams["lr"] == 1.0


def test_a_board_a_manifest_entry_names_but_the_site_lacks_is_skipped(catalogue, tmp_path, monkeypatch):
    """opt-text-transformer may be named before its board is loaded: seeding goes board by board, so
    the entry is seeded where it can be, and asking for the missing board names it."""
    import json
    import shutil

    from django.core.management.base import CommandError

    from leaderboard.submissions import baselines

    shutil.copy(baselines.BASELINES_DIR / "clip_sgd.py", tmp_path / "clip_sgd.py")
    entry = {"file": "clip_sgd.py", "name": "Clipped", "family": "seed method",
             "hparams_by_benchmark": {"opt-not-loaded": {"lr": 10}, "opt-digits": {"lr": 0.01}}}
    (tmp_path / "baselines.json").write_text(json.dumps({"schema": 1, "baselines": [entry]}))
    monkeypatch.setattr(baselines, "BASELINES_DIR", tmp_path)
    call_command("seed_baselines", "--benchmark", "opt-digits", "--benchmark", "opt-synthetic")
    assert list(Submission.objects.values_list("benchmark__slug", "name", "hparams")) == [
        ("opt-digits", "Clipped", {"lr": 0.01})]
    with pytest.raises(CommandError, match="no benchmark 'opt-not-loaded'; run loadbenchmarks first"):
        call_command("seed_baselines", "--benchmark", "opt-not-loaded")


def test_the_demos_transformer_trio_is_seeded_by_file_name_and_an_unknown_file_is_named(catalogue,
                                                                                         django_capture_on_commit_callbacks):
    from django.core.management.base import CommandError

    from leaderboard.submissions.management.commands.rundemo import TRANSFORMER_DEMO

    with pytest.raises(CommandError, match="no optimizer baseline file nope.py; the manifest lists sgdm.py"):
        call_command("seed_baselines", "--benchmark", "opt-text-transformer", "--optimizer", "nope.py")
    assert not Submission.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_baselines", "--benchmark", "opt-text-transformer", *TRANSFORMER_DEMO)
    seeded = Submission.objects.filter(benchmark__slug="opt-text-transformer")
    assert {(s.name, s.hparams["lr"]) for s in seeded} == {
        ("Adam", 0.01), ("SGD with momentum", 0.5), ("SGD with coordinate-wise clipping", 10)}
    assert set(Submission.objects.values_list("benchmark__slug", flat=True)) == {"opt-text-transformer"}
