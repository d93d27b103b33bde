"""GeoDE (index.csv + images/) and Dollar Street (the Kaggle CSV + images): every mapped row is
scored with its accepted ImageNet indices, regions stay as spelled, gaps in the copy are warnings."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from runner import data_files
from runner.datasets import DATASETS, DatasetMissing
from runner.datasets.geo import FAKE_GEODE_OBJECTS, FAKE_GEODE_UNMAPPED
from runner.metrics import geo

GEODE = data_files.load("geode")
STREET = data_files.load("dollarstreet")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geo-data")
    DATASETS["geode"].fake(folder, n_per_class=1, seed=1)
    DATASETS["dollarstreet"].fake(folder, n_per_class=1, seed=2, topics=("tv", "toilet"))
    return folder


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def rewrite(path, rows, drop=()):
    columns = [c for c in rows[0] if c not in drop]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_a_fake_geode_has_the_release_columns_and_every_region(root):
    rows = read_rows(root / "geode" / "index.csv")
    assert list(rows[0]) == ["file_path", "object", "region", "ip_country"]
    assert {r["region"] for r in rows} == set(GEODE["regions"])
    assert all((root / "geode" / "images" / r["file_path"]).is_file() for r in rows)


def test_geode_scores_every_mapped_row_with_its_accepted_indices_and_drops_unmapped_objects(root):
    reader = DATASETS["geode"].open(root)
    assert reader.size == len(FAKE_GEODE_OBJECTS) * 6  # the unmapped object's 6 rows are not scored
    assert all(FAKE_GEODE_UNMAPPED not in objects for objects in reader.targets.objects)
    chair = reader.targets.objects.index(("chair",))
    assert reader.targets.accepted[chair].tolist() == GEODE["classes"]["chair"]
    assert set(reader.targets.region) == set(GEODE["regions"])
    assert reader.env["synthetic_data"] is True


def test_a_geode_row_whose_image_is_missing_is_skipped_with_a_warning(root, tmp_path):
    shutil.copytree(root / "geode", tmp_path / "geode")
    first = read_rows(tmp_path / "geode" / "index.csv")[0]
    (tmp_path / "geode" / "images" / first["file_path"]).unlink()
    reader = DATASETS["geode"].open(tmp_path)
    assert reader.size == len(FAKE_GEODE_OBJECTS) * 6 - 1
    assert any("1 mapped rows have no image file" in w for w in reader.env["dataset_warnings"])


def test_geode_object_names_match_with_underscores_or_spaces(root, tmp_path):
    shutil.copytree(root / "geode", tmp_path / "geode")
    rows = read_rows(tmp_path / "geode" / "index.csv")
    for row in rows:
        row["object"] = row["object"].replace(" ", "_")
    rewrite(tmp_path / "geode" / "index.csv", rows)
    reader = DATASETS["geode"].open(tmp_path)
    assert ("light_switch",) in reader.targets.objects
    assert reader.size == len(FAKE_GEODE_OBJECTS) * 6


def test_a_fake_dollar_street_covers_every_region_and_income_quartile(root):
    rows = read_rows(root / "dollarstreet" / "images_v2_imagenet_test.csv")
    assert {"imageRelPath", "topics", "region", "region.id", "income", "imagenet_sysnet_id"} <= set(rows[0])
    reader = DATASETS["dollarstreet"].open(root)
    cells = set(zip(reader.targets.region, geo.income_quartile(reader.targets.income), strict=True))
    assert cells == {
        (r, q) for r in ("Africa", "The Americas", "Asia", "Europe") for q in ("q1", "q2", "q3", "q4")
    }


def test_dollar_street_labels_come_from_the_csvs_list_of_1k_indices(root):
    reader = DATASETS["dollarstreet"].open(root)
    tv = reader.targets.objects.index(("tv",))
    assert reader.targets.accepted[tv].tolist() == STREET["topic_to_imagenet"]["tv"]
    assert reader.env["label_source"] == "the CSV's imagenet_sysnet_id column"


def test_dollar_street_without_the_index_column_maps_topics_and_reads_region_ids(root, tmp_path):
    shutil.copytree(root / "dollarstreet", tmp_path / "dollarstreet")
    path = tmp_path / "dollarstreet" / "images_v2_imagenet_test.csv"
    rows = read_rows(path)
    rows[0]["topics"] = "washing clothes/cleaning, home"
    rewrite(path, rows, drop=("imagenet_sysnet_id", "region"))
    reader = DATASETS["dollarstreet"].open(tmp_path)
    assert "topic_to_imagenet" in reader.env["label_source"]
    expected = sorted(
        set(STREET["topic_to_imagenet"]["washing clothes/cleaning"])
        | set(STREET["topic_to_imagenet"]["home"])
    )
    assert reader.targets.accepted[0].tolist() == expected
    assert set(reader.targets.region) == {"Africa", "The Americas", "Asia", "Europe"}


def test_dollar_street_accepts_wnids_in_the_index_column(root, tmp_path):
    shutil.copytree(root / "dollarstreet", tmp_path / "dollarstreet")
    path = tmp_path / "dollarstreet" / "images_v2_imagenet_test.csv"
    rows = read_rows(path)
    rows[0]["imagenet_sysnet_id"] = str([data_files.imagenet_wnids()[851]])
    rewrite(path, rows)
    assert DATASETS["dollarstreet"].open(tmp_path).targets.accepted[0].tolist() == [851]


def test_preparing_dollar_street_without_the_kaggle_archive_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissing) as caught:
        DATASETS["dollarstreet"].prepare(tmp_path)
    assert "kaggle.com/datasets/mlcommons/the-dollar-street-dataset" in caught.value.message
    assert str(tmp_path) in caught.value.message


def test_geo_batches_are_preprocessed_like_imagenet(root):
    batch = next(DATASETS["dollarstreet"].open(root).batches(4))
    assert batch.inputs.shape == (4, 3, 224, 224) and batch.inputs.dtype == np.float32
    assert batch.ids[0].startswith("assets/")
