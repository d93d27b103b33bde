"""`runner data list | prepare | verify | fake` as an operator types them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.datasets import FAKE_MARKER


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    return invoke


def test_data_list_shows_every_dataset_present_or_not_and_labels_fakes(cli, tmp_path):
    listed = cli("data", "list", "--root", str(tmp_path))
    assert listed.exit_code == 0, listed.output
    for name in (
        "sklearn-digits",
        "cifar-10-batches-py",
        "CIFAR-10-C",
        "imagenet/val",
        "imagenet-c",
        "geode",
        "dollarstreet",
    ):
        assert name in listed.output
    assert "no (manual download)" in listed.output  # Dollar Street sits behind a form
    assert "synthetic" not in listed.output
    assert cli("data", "fake", "cifar10", "--root", str(tmp_path)).exit_code == 0
    cifar_row = next(
        line
        for line in cli("data", "list", "--root", str(tmp_path)).output.splitlines()
        if "cifar-10-batches-py" in line
    )
    assert "synthetic" in cifar_row


def test_data_fake_writes_a_labelled_copy_that_verify_accepts_with_warnings(cli, tmp_path):
    made = cli("data", "fake", "CIFAR-10-C", "--root", str(tmp_path), "--n-per-class", "1")
    assert made.exit_code == 0, made.output
    assert "synthetic" in made.output and (tmp_path / "CIFAR-10-C" / FAKE_MARKER).is_file()
    checked = cli("data", "verify", "cifar10-c", "--root", str(tmp_path))
    assert checked.exit_code == 0, checked.output
    assert "CIFAR-10-C: ok" in checked.output and "SYNTHETIC" in checked.output
    assert "the release has 50,000" in checked.output  # a count that differs is a warning, not an error


def test_data_verify_of_a_missing_dataset_fails_and_says_how_to_get_it(cli, tmp_path):
    checked = cli("data", "verify", "imagenet-a", "--root", str(tmp_path))
    assert checked.exit_code == 1 and "MISSING" in checked.output and "runner data prepare" in checked.output


def test_data_prepare_of_the_bundled_digits_needs_no_network(cli, tmp_path):
    prepared = cli("data", "prepare", "digits", "--root", str(tmp_path))
    assert prepared.exit_code == 0, prepared.output
    assert "sklearn-digits: ok" in prepared.output and "images: 1797" in prepared.output


def test_data_commands_name_the_known_datasets_for_an_unknown_one(cli, tmp_path):
    refused = cli("data", "fake", "mnist", "--root", str(tmp_path))
    assert refused.exit_code == 2 and "no dataset 'mnist'" in refused.output
    refused = cli("data", "fake", "digits", "--root", str(tmp_path))
    assert refused.exit_code == 1 and "real data bundled with scikit-learn" in refused.output
