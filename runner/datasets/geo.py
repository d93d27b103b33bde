"""The geographic-shift sets GeoDE and Dollar Street: a metadata CSV plus image files.

Every metadata row whose object (GeoDE) or topic (Dollar Street) has an ImageNet-1k mapping is
scored; its label is the set of accepted 1k indices (any of them counts as a hit). Region names
are kept as spelled in the metadata.
"""

from __future__ import annotations

import ast
import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runner import data_files
from runner.datasets import download, synth
from runner.datasets.base import (
    Dataset,
    DatasetMissing,
    Targets,
    VerifyReport,
    base_env,
    file_digest,
    is_synthetic,
    write_marker,
)
from runner.datasets.download import downloads_folder
from runner.datasets.images import RESIZE_CROP
from runner.datasets.readers import ImageFileReader, ImageSet
from runner.progress import Progress, no_progress

csv.field_size_limit(1 << 24)


def _object_key(name: str) -> str:
    return name.replace("_", " ").strip().lower()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


class _GeoDataset(Dataset):
    """Shared reading: rows → (image paths, accepted indices, per-item metadata), with warnings."""

    index_file = ""
    image_folder = ""

    def present(self, root: Path | str) -> bool:
        return (self.path(root) / self.index_file).is_file()

    def _rows(self, folder: Path, report: VerifyReport) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _unpack(self, archive: Path, root: Path, staging_name: str, progress: Progress) -> VerifyReport:
        """Unpack a downloaded archive, move the folder holding the index file into place, verify
        it, and record the archive's sha256 (neither release publishes one)."""
        staging = downloads_folder(root) / staging_name
        download.extract(archive, staging, progress=progress)
        found = sorted(staging.rglob(self.index_file))
        if not found:
            raise DatasetMissing(f"{archive} holds no {self.index_file}")
        target = self.path(root)
        if target.exists():
            raise DatasetMissing(f"{target} already exists; move it away to prepare again")
        found[0].parent.rename(target)
        report = self.verify(root)
        report.checksums[archive.name] = "sha256:" + file_digest(archive, "sha256")
        return report

    def _load(self, root: Path | str, report: VerifyReport) -> tuple[Path, list[dict[str, Any]]]:
        folder = self.path(root)
        index = folder / self.index_file
        if not index.is_file():
            report.error(f"{index} does not exist; run `runner data prepare {self.name}`")
            return folder, []
        report.checksums[self.index_file] = "sha256:" + file_digest(index, "sha256")
        rows = self._rows(folder, report)
        images = folder / self.image_folder if self.image_folder else folder
        present = [r for r in rows if os.path.isfile(images / r["path"])]
        if len(present) < len(rows):
            report.warnings.append(
                f"{len(rows) - len(present):,} mapped rows have no image file and were skipped"
            )
        report.counts["images scored"] = len(present)
        if not present:
            report.error(f"no image of a mapped row under {images}")
        return images, present

    def verify(self, root: Path | str, *, deep: bool = False) -> VerifyReport:
        report = VerifyReport(self.name, synthetic=is_synthetic(self.path(root)))
        self._load(root, report)
        return report

    def open(self, root: Path | str, **_: Any) -> ImageFileReader:
        report = VerifyReport(self.name, synthetic=is_synthetic(self.path(root)))
        images, rows = self._load(root, report)
        report.raise_if_missing()
        targets = Targets(
            accepted=[np.asarray(r["accepted"], dtype=np.int64) for r in rows],
            region=np.array([r["region"] for r in rows], dtype=object),
            income=np.array([r.get("income", np.nan) for r in rows], dtype=np.float64),
            objects=[tuple(r["objects"]) for r in rows],
        )
        env = base_env(
            self.name,
            self.path(root),
            report,
            preprocessing=RESIZE_CROP,
            dataset_checksum=report.checksums[self.index_file],
        )
        return ImageFileReader(
            self.name, [ImageSet(images, [r["path"] for r in rows])], RESIZE_CROP, targets, env
        )


# --------------------------------------------------------------------------------------------
# GeoDE
# --------------------------------------------------------------------------------------------
GEODE_RELEASE_ROWS = 61_940  # images in the full release's index.csv (40 objects, 6 regions)
GEODE_REFERENCE_TEST_ROWS = 10_333  # the reference study's test split (34 mapped objects)
GEODE_ARCHIVE = download.Archive("https://geodiverse-data-collection.cs.princeton.edu/geode.zip", "geode.zip")
FAKE_GEODE_OBJECTS = ("bag", "chair", "car", "light switch", "stove", "dog")
FAKE_GEODE_UNMAPPED = "tree"  # dropped by the protocol: no ImageNet mapping
# The fake copy's difficulty per region: the mean blend towards another object's pattern
# (synth.distract). An arbitrary table chosen so the breakdowns vary, not a finding about any region.
FAKE_GEODE_REGION_BLEND = {
    "Africa": 0.2, "Americas": 0.1, "EastAsia": 0.25, "Europe": 0.3, "SouthEastAsia": 0.35, "WestAsia": 0.15,
}


def _shown(table: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in table.items())


def geode_mapping() -> dict[str, list[int]]:
    return {_object_key(k): list(v) for k, v in data_files.load("geode")["classes"].items()}


class GeodeDataset(_GeoDataset):
    name = folder = "geode"
    title = "GeoDE"
    aliases = ("geo-de",)
    index_file = "index.csv"
    image_folder = "images"

    def _rows(self, folder: Path, report: VerifyReport) -> list[dict[str, Any]]:
        raw = _read_csv(folder / self.index_file)
        missing = {"file_path", "object", "region"} - set(raw[0] if raw else {})
        if missing:
            report.error(f"index.csv lacks the columns {sorted(missing)}")
            return []
        mapping = geode_mapping()
        rows = [
            {
                "path": r["file_path"],
                "accepted": mapping[_object_key(r["object"])],
                "region": r["region"],
                "objects": (r["object"],),
                "country": r.get("ip_country", ""),
            }
            for r in raw
            if _object_key(r["object"]) in mapping
        ]
        report.counts["index rows"] = len(raw)
        report.counts["mapped rows"] = len(rows)
        report.info["label_source"] = "geode.json classes: object → accepted ImageNet-1k indices"
        if len(rows) == GEODE_REFERENCE_TEST_ROWS:
            report.notes.append("index.csv is the reference study's 10,333-image test split")
        elif len(raw) != GEODE_RELEASE_ROWS:
            report.warnings.append(f"index.csv has {len(raw):,} rows, the release {GEODE_RELEASE_ROWS:,}")
        return rows

    def prepare(self, root: Path | str, progress: Progress | None = None) -> VerifyReport:
        """Download geode.zip from the project's site (no published checksum: its sha256 is
        recorded in the report) and unpack it to ``geode/index.csv`` + ``geode/images/``."""
        progress = progress or no_progress
        root = Path(root)
        archive = download.fetch(GEODE_ARCHIVE, downloads_folder(root), progress=progress)
        report = self._unpack(archive, root, "geode-unpacked", progress)
        report.notes.append("geode.zip has no published checksum; its sha256 is recorded here")
        return report

    def fake(
        self,
        root: Path | str,
        *,
        n_per_class: int = 2,
        seed: int = 0,
        objects: Sequence[str] = FAKE_GEODE_OBJECTS,
        **_: Any,
    ) -> Path:
        """index.csv in the release's columns; every region; one unmapped object that must be dropped."""
        folder = self.path(root)
        rng = np.random.default_rng(seed)
        mapping = geode_mapping()
        others = sorted({mapping[o][0] for o in objects if o in mapping})
        countries: dict[str, str] = {}
        for country, region in data_files.load("geode")["country_to_region"].items():
            countries.setdefault(region, country)
        rows = []
        for region in data_files.load("geode")["regions"]:
            country = countries[region]
            for obj in (*objects, FAKE_GEODE_UNMAPPED):
                key = mapping.get(obj, [0])[0]
                for i in range(n_per_class):
                    rel = (
                        f"{region}/{country}/{country.replace(' ', '_')}_{obj.replace(' ', '_')}_{i:03d}.jpg"
                    )
                    array = synth.pattern(key, int(rng.integers(240, 330)), int(rng.integers(240, 330)), rng)
                    array = synth.distract(array, FAKE_GEODE_REGION_BLEND[region], rng, others=others)
                    (folder / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
                    (folder / "images" / rel).write_bytes(synth.jpeg_bytes(array))
                    rows.append({"file_path": rel, "object": obj, "region": region, "ip_country": country})
        _write_csv(folder / self.index_file, ("file_path", "object", "region", "ip_country"), rows)
        write_marker(
            folder,
            self.title,
            seed=seed,
            details=f"{len(objects)} mapped objects + '{FAKE_GEODE_UNMAPPED}' (unmapped) × 6 regions × "
            f"{n_per_class} images; coloured like their first accepted ImageNet class, blended with another "
            f"object's pattern by a mean weight the writer sets per region ({_shown(FAKE_GEODE_REGION_BLEND)}; "
            "an arbitrary table, not a finding about any region).",
        )
        return folder


# --------------------------------------------------------------------------------------------
# Dollar Street
# --------------------------------------------------------------------------------------------
DOLLARSTREET_REGION_IDS = {"af": "Africa", "am": "The Americas", "as": "Asia", "eu": "Europe"}
FAKE_DOLLARSTREET_TOPICS = ("tv", "toilet", "refrigerator", "bike", "car", "stove/hob")
FAKE_INCOMES = ((40, 195), (196, 685), (686, 1963), (1964, 9000))  # the four quartiles, poorest first
# The fake copy's difficulty: a mean blend (synth.distract) per income quartile, poorest first, plus
# one per region. The writer's choice, so that the income and region breakdowns vary; not a finding.
FAKE_INCOME_BLEND = (0.3, 0.22, 0.14, 0.08)
FAKE_DOLLARSTREET_REGION_BLEND = {"af": 0.04, "am": 0.08, "as": 0.0, "eu": 0.12}
KAGGLE_COLUMNS = (
    "",
    "id",
    "country.id",
    "country.name",
    "region.id",
    "region",
    "type",
    "imageRelPath",
    "topics",
    "place",
    "income",
    "imagenet_synonyms",
    "imagenet_sysnet_id",
)


def dollarstreet_mapping() -> dict[str, list[int]]:
    return {
        k.strip().lower(): list(v) for k, v in data_files.load("dollarstreet")["topic_to_imagenet"].items()
    }


def _parse_accepted(text: str) -> list[int]:
    """``imagenet_sysnet_id``: a Python list of 1k indices (or of wnids, accepted as well)."""
    value = ast.literal_eval(text) if text.strip() else []
    if isinstance(value, (int, str)):
        value = [value]
    index = data_files.imagenet_index()
    return [int(v) if not (isinstance(v, str) and v.startswith("n")) else index[v] for v in value]


class DollarStreetDataset(_GeoDataset):
    name = folder = "dollarstreet"
    title = "Dollar Street"
    aliases = ("dollar-street", "dollar_street")
    index_file = "images_v2_imagenet_test.csv"
    image_folder = ""
    needs_manual_download = True

    def _rows(self, folder: Path, report: VerifyReport) -> list[dict[str, Any]]:
        raw = _read_csv(folder / self.index_file)
        columns = set(raw[0]) if raw else set()
        missing = {"imageRelPath", "topics", "income"} - columns
        if "region" not in columns and "region.id" not in columns:
            missing.add("region")
        if missing:
            report.error(f"{self.index_file} lacks the columns {sorted(missing)}")
            return []
        mapping = dollarstreet_mapping()
        use_column = "imagenet_sysnet_id" in columns
        report.info["label_source"] = (
            "the CSV's imagenet_sysnet_id column"
            if use_column
            else "topics mapped by dollarstreet.json topic_to_imagenet"
        )
        rows = []
        for r in raw:
            topics = tuple(t.strip().lower() for t in r["topics"].split(",") if t.strip())
            if use_column:
                accepted = sorted(set(_parse_accepted(r["imagenet_sysnet_id"])))
            else:
                accepted = sorted({i for t in topics if t in mapping for i in mapping[t]})
            if not accepted:
                continue
            region = r.get("region") or DOLLARSTREET_REGION_IDS.get(
                r.get("region.id", "").strip().lower(), ""
            )
            rows.append(
                {
                    "path": r["imageRelPath"],
                    "accepted": accepted,
                    "region": region,
                    "income": float(r["income"]),
                    "objects": tuple(t for t in topics if t in mapping) or topics,
                    "id": r.get("id", ""),
                }
            )
        report.counts["index rows"] = len(raw)
        report.counts["mapped rows"] = len(rows)
        report.notes.append(
            "the release's row count for this split is not known to the runner: no count check"
        )
        return rows

    def prepare(self, root: Path | str, progress: Progress | None = None) -> VerifyReport:
        """Dollar Street's ImageNet-mapped split is on Kaggle behind a login: unpack an archive the
        operator downloaded, or say where to get one."""
        progress = progress or no_progress
        root = Path(root)
        candidates = (
            root / "the-dollar-street-dataset.zip",
            root / "archive.zip",  # the name Kaggle's web page gives the download
            downloads_folder(root) / "the-dollar-street-dataset.zip",
        )
        archive = next((p for p in candidates if p.is_file()), None)
        if archive is None:
            raise DatasetMissing(
                "Dollar Street's ImageNet-mapped split (images_v2_imagenet_test.csv) is distributed on "
                "Kaggle, which needs an account: sign in, accept the dataset's licence (CC BY-SA 4.0) at "
                "https://www.kaggle.com/datasets/mlcommons/the-dollar-street-dataset, download it (or run "
                "`kaggle datasets download mlcommons/the-dollar-street-dataset`) and put "
                f"the-dollar-street-dataset.zip in {root}; then run `runner data prepare dollarstreet` "
                f"again. (Or unpack it yourself so that {root / 'dollarstreet' / self.index_file} and the "
                "images at its imageRelPath exist.)"
            )
        return self._unpack(archive, root, "dollarstreet-unpacked", progress)

    def fake(
        self,
        root: Path | str,
        *,
        n_per_class: int = 1,
        seed: int = 0,
        topics: Sequence[str] = FAKE_DOLLARSTREET_TOPICS,
        **_: Any,
    ) -> Path:
        """The Kaggle CSV's columns; every region × every income quartile × each topic."""
        folder = self.path(root)
        rng = np.random.default_rng(seed)
        mapping = dollarstreet_mapping()
        names = data_files.load("imagenet_wnids")["names"]
        rows: list[dict[str, Any]] = []
        countries = {
            "af": ("ng", "Nigeria"),
            "am": ("br", "Brazil"),
            "as": ("in", "India"),
            "eu": ("fr", "France"),
        }
        others = sorted({mapping[t][0] for t in topics})
        for region_id, region in DOLLARSTREET_REGION_IDS.items():
            for quartile, (low, high) in enumerate(FAKE_INCOMES):
                blend = FAKE_INCOME_BLEND[quartile] + FAKE_DOLLARSTREET_REGION_BLEND[region_id]
                for topic in topics:
                    for _ in range(n_per_class):
                        number = len(rows)
                        accepted = mapping[topic]
                        income = int(rng.integers(low, high + 1))
                        place = f"fakeplace{number // 3:04d}"
                        rel = f"assets/{place}/fake{number:05d}.jpg"
                        array = synth.pattern(
                            accepted[0], int(rng.integers(240, 330)), int(rng.integers(240, 330)), rng
                        )
                        array = synth.distract(array, blend, rng, others=others)
                        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                        (folder / rel).write_bytes(synth.jpeg_bytes(array))
                        code, country = countries[region_id]
                        rows.append(
                            {
                                "": number,
                                "id": f"fake{number:05d}",
                                "country.id": code,
                                "country.name": country,
                                "region.id": region_id,
                                "region": region,
                                "type": "image",
                                "imageRelPath": rel,
                                "topics": topic,
                                "place": place,
                                "income": income,
                                "imagenet_synonyms": str([names[i] for i in accepted]),
                                "imagenet_sysnet_id": str(accepted),
                            }
                        )
        _write_csv(folder / self.index_file, KAGGLE_COLUMNS, rows)
        write_marker(
            folder,
            self.title,
            seed=seed,
            details=f"{len(topics)} topics × 4 regions × 4 income quartiles × {n_per_class} images; coloured "
            "like their first accepted ImageNet class, blended with another topic's pattern by a mean weight "
            f"the writer sets per income quartile (poorest first: {', '.join(map(str, FAKE_INCOME_BLEND))}) "
            f"plus one per region ({_shown(FAKE_DOLLARSTREET_REGION_BLEND)}); an arbitrary table, not a finding.",
        )
        return folder


def fake_geo_indices() -> list[int]:
    """The 1k classes the fake geographic images are coloured as (the first accepted index)."""
    geode, street = geode_mapping(), dollarstreet_mapping()
    return sorted(
        {geode[o][0] for o in FAKE_GEODE_OBJECTS} | {street[t][0] for t in FAKE_DOLLARSTREET_TOPICS}
    )
