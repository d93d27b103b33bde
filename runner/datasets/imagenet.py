"""ImageNet validation, ImageNet-A, ImageNet-R (``<root>/<wnid>/<image>`` trees) and ImageNet-C
(``<root>/<corruption>/<severity>/<wnid>/<image>``).

Labels come from the full class lists, never from the folders present: a val image of wnid w has
label ``imagenet_wnids.index(w)``; an ImageNet-A/R image the position of w in the subset's 200
wnids. A partial, smoke or fake tree therefore scores exactly as its images would inside the
full release.

The module is one piece because the four datasets are one folder reader (ImageFolderDataset) in
four settings, plus ImageNet-C's one extra level and the val archive's sorting, which only that
reader uses.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runner import data_files
from runner.datasets import download, synth
from runner.datasets.base import (
    IMAGE_SUFFIXES,
    Dataset,
    DatasetMissing,
    DownloadFailed,
    Targets,
    VerifyReport,
    base_env,
    file_digest,
    is_synthetic,
    listing_fingerprint,
    sized_listing,
    write_marker,
)
from runner.datasets.cifar import SEVERITIES, corruptions, extra_corruptions
from runner.datasets.download import downloads_folder
from runner.datasets.images import CENTER_CROP, RESIZE_CROP
from runner.datasets.readers import ImageFileReader, ImageSet
from runner.progress import Progress, no_progress

LABEL_SPACES = ("imagenet", "imagenet_a", "imagenet_r")


def label_wnids(space: str) -> tuple[str, ...]:
    """The wnids whose positions are the labels of ``space`` (1,000 or 200, ascending)."""
    if space == "imagenet":
        return data_files.imagenet_wnids()
    if space in ("imagenet_a", "imagenet_r"):
        return data_files.subset_wnids(space)
    raise ValueError(f"unknown label space {space!r}; one of {LABEL_SPACES}")


def label_index(space: str) -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(label_wnids(space))}


def scan_tree(folder: Path, labels_of: dict[str, int]) -> tuple[list[str], np.ndarray, list[str]]:
    """(relative paths ``wnid/file`` sorted, their labels, wnid folders outside the label space)."""
    relpaths: list[str] = []
    label_runs: list[tuple[int, int]] = []
    outside: list[str] = []
    with os.scandir(folder) as entries:
        wnids = sorted(e.name for e in entries if e.is_dir())
    for wnid in wnids:
        if wnid not in labels_of:
            outside.append(wnid)
            continue
        with os.scandir(folder / wnid) as entries:
            files = sorted(e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
        relpaths.extend(f"{wnid}/{name}" for name in files)
        label_runs.append((labels_of[wnid], len(files)))
    labels = (
        np.repeat(np.array([lab for lab, _ in label_runs], dtype=np.int64), [n for _, n in label_runs])
        if label_runs
        else np.zeros(0, dtype=np.int64)
    )
    return relpaths, labels, outside


def default_fake_wnids() -> list[str]:
    """Six wnids that are in ImageNet-A and ImageNet-R alike (so every fake tree shares classes)."""
    both = sorted(set(data_files.subset_wnids("imagenet_a")) & set(data_files.subset_wnids("imagenet_r")))
    return both[:6]


def _choose_wnids(
    classes: int | Sequence[str] | None, pool: Sequence[str], default: Sequence[str]
) -> list[str]:
    if classes is None:
        return list(default)
    if isinstance(classes, int):
        return list(default)[:classes] if classes <= len(default) else list(pool)[:classes]
    unknown = [w for w in classes if w not in pool]
    if unknown:
        raise ValueError(f"wnids outside this dataset's classes: {unknown}")
    return list(classes)


def _write_jpeg(path: Path, array: np.ndarray, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(synth.jpeg_bytes(array, quality))


class ImageFolderDataset(Dataset):
    """ImageNet val, ImageNet-A or ImageNet-R: one folder per wnid."""

    def __init__(
        self,
        name: str,
        *,
        title: str,
        aliases: tuple[str, ...],
        label_space: str,
        total: int,
        classes: int,
        archive: download.Archive | None,
        file_pattern: str,
    ):
        self.name = self.folder = name
        self.title = title
        self.aliases = aliases
        self.label_space = label_space
        self.total = total
        self.classes = classes
        self.archive = archive
        self.file_pattern = file_pattern
        self.needs_manual_download = archive is None

    def present(self, root: Path | str) -> bool:
        folder = self.path(root)
        if not folder.is_dir():
            return False
        labels_of = label_index(self.label_space)
        with os.scandir(folder) as entries:
            return any(e.is_dir() and e.name in labels_of for e in entries)

    def _scan(self, folder: Path, space: str, report: VerifyReport) -> tuple[list[str], np.ndarray]:
        if not folder.is_dir():
            report.error(f"{folder} does not exist; run `runner data prepare {self.name}`")
            return [], np.zeros(0, dtype=np.int64)
        relpaths, labels, outside = scan_tree(folder, label_index(space))
        if outside:
            shown = ", ".join(outside[:5]) + (" …" if len(outside) > 5 else "")
            report.warnings.append(
                f"{len(outside)} folders are not classes of {space} and were skipped: {shown}"
            )
        if not relpaths:
            report.error(f"no images of {space}'s classes under {folder}")
        return relpaths, labels

    def verify(self, root: Path | str, *, deep: bool = False) -> VerifyReport:
        folder = self.path(root)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        relpaths, labels = self._scan(folder, self.label_space, report)
        if report.ok:
            report.count("images", len(relpaths), self.total)
            report.count("classes", len(np.unique(labels)), self.classes)
            report.checksums["listing"] = listing_fingerprint(sized_listing(folder, relpaths))
        return report

    def open(self, root: Path | str, *, label_space: str | None = None, **_: Any) -> ImageFileReader:
        """Every image of the label space's classes; ``label_space="imagenet_r"`` on the val tree
        gives ImageNet-R's ImageNet-200 (the val images of its 200 wnids, labelled 0–199)."""
        space = label_space or self.label_space
        folder = self.path(root)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        relpaths, labels = self._scan(folder, space, report)
        report.raise_if_missing()
        expected = self.total if space == self.label_space else 50 * len(label_wnids(space))
        report.count("images", len(relpaths), expected)
        env = base_env(
            self.name,
            folder,
            report,
            label_space=space,
            preprocessing=RESIZE_CROP,
            dataset_checksum=listing_fingerprint(sized_listing(folder, relpaths)),
        )
        return ImageFileReader(
            self.name, [ImageSet(folder, relpaths)], RESIZE_CROP, Targets(labels=labels), env
        )

    def prepare(self, root: Path | str, progress: Progress | None = None) -> VerifyReport:
        progress = progress or no_progress
        if self.archive is None:
            return prepare_imagenet_val(Path(root), progress)
        download.fetch_and_extract(self.archive, root, progress=progress)
        return self.verify(root)

    def fake(
        self,
        root: Path | str,
        *,
        n_per_class: int = 2,
        seed: int = 0,
        classes: int | Sequence[str] | None = None,
        **_: Any,
    ) -> Path:
        """JPEGs of assorted sizes (so resize and crop are exercised) in ``<wnid>/`` folders."""
        folder = self.path(root)
        pool = label_wnids(self.label_space)
        default = fake_val_wnids() if self.label_space == "imagenet" else default_fake_wnids()
        wnids = _choose_wnids(classes, pool, default)
        rng = np.random.default_rng(seed)
        index = data_files.imagenet_index()
        blend, grey = FAKE_SHIFT[self.name]
        others = [index[w] for w in wnids]
        counter = 0
        for wnid in wnids:
            for i in range(n_per_class):
                counter += 1
                width, height = int(rng.integers(240, 400)), int(rng.integers(230, 380))
                array = synth.distract(synth.pattern(index[wnid], height, width, rng), blend, rng, others=others)
                array = synth.desaturate(array, grey) if grey else array
                name = self.file_pattern.format(n=counter, i=i)
                _write_jpeg(folder / wnid / name, array)
        if self.name == "imagenet-a":
            (folder / "README.txt").write_text("ImageNet-A (fake copy)\n", encoding="utf-8")
        shift = f"blended with another class's pattern by up to {2 * blend:.0%}" + (
            f", colour {grey:.0%} drained (the stripes stay)" if grey else ""
        )
        write_marker(
            folder,
            self.title,
            seed=seed,
            details=f"{len(wnids)} classes × {n_per_class} images; class-coloured stripes, {shift}.",
        )
        return folder


# How much harder the writer makes each fake tree than a clean class pattern: (mean blend towards
# another class's pattern, share of colour drained). The writer's choice, not a property of the
# released sets: val is mildly hard, ImageNet-A much harder, ImageNet-R keeps the stripes but
# loses most colour (as renditions keep shapes and lose textures).
FAKE_SHIFT = {"imagenet/val": (0.12, 0.0), "imagenet-a": (0.4, 0.0), "imagenet-r": (0.08, 0.85)}


def fake_val_wnids() -> list[str]:
    """The fake val tree covers the A/R classes above and every class the fake geographic sets use."""
    from runner.datasets.geo import fake_geo_indices

    wnids = data_files.imagenet_wnids()
    return sorted(set(default_fake_wnids()) | {wnids[i] for i in fake_geo_indices()})


# --------------------------------------------------------------------------------------------
# ImageNet validation: behind a licence, so prepare works from archives the operator placed.
# --------------------------------------------------------------------------------------------
VAL_ARCHIVE = download.Archive(
    "https://image-net.org/data/ILSVRC/2012/ILSVRC2012_img_val.tar",
    "ILSVRC2012_img_val.tar",
    md5="29b22e2961454d5413ddabcf34fc5622",
)
DEVKIT_ARCHIVE = download.Archive(
    "https://image-net.org/data/ILSVRC/2012/ILSVRC2012_devkit_t12.tar.gz",
    "ILSVRC2012_devkit_t12.tar.gz",
    md5="fa75699e90414af021442c21a62c3abf",
)


def _find_archive(root: Path, archive: download.Archive) -> Path | None:
    for folder in (root, root / "imagenet", downloads_folder(root)):
        if (folder / archive.filename).is_file():
            return folder / archive.filename
    return None


def prepare_imagenet_val(
    root: Path, progress: Progress = no_progress, *, check_md5: bool = True
) -> VerifyReport:
    """Sort the official val archive into ``imagenet/val/<wnid>/`` using the devkit's labels.

    ImageNet is distributed only to registered users who accept its terms, so the runner never
    downloads it: the operator places the two archives and this function does the rest.
    """
    val_tar, devkit = _find_archive(root, VAL_ARCHIVE), _find_archive(root, DEVKIT_ARCHIVE)
    if val_tar is None or devkit is None:
        raise DatasetMissing(
            "ImageNet validation needs an image-net.org account and acceptance of its terms of access, so "
            "the runner cannot download it. Log in at https://image-net.org/download-images.php, download "
            f"{VAL_ARCHIVE.filename} (6.3 GB, md5 {VAL_ARCHIVE.md5}) and {DEVKIT_ARCHIVE.filename} "
            f"(md5 {DEVKIT_ARCHIVE.md5}) from the ILSVRC2012 page, put both in {root / 'imagenet'}, and run "
            "`runner data prepare imagenet/val` again. (Or place an already sorted tree at "
            f"{root / 'imagenet' / 'val'}/<wnid>/*.JPEG.)"
        )
    if check_md5:
        for path, archive in ((val_tar, VAL_ARCHIVE), (devkit, DEVKIT_ARCHIVE)):
            progress(0.0, f"checking {path.name}")
            found = file_digest(path, "md5")
            if found != archive.md5:
                raise DownloadFailed(f"{path}: md5 {found} differs from the release's {archive.md5}")
    sort_val_archive(val_tar, devkit, root / "imagenet" / "val", progress=progress)
    return DATASET_VAL.verify(root)


def devkit_val_wnids(devkit: Path) -> list[str]:
    """The wnid of each val image in order (ILSVRC2012_val_00000001 first), from the devkit."""
    from scipy.io import loadmat

    truth = meta = None
    with tarfile.open(devkit) as tf:
        for member in tf.getmembers():
            if member.name.endswith("data/ILSVRC2012_validation_ground_truth.txt"):
                truth = tf.extractfile(member).read().decode()  # type: ignore[union-attr]
            elif member.name.endswith("data/meta.mat"):
                meta = tf.extractfile(member).read()  # type: ignore[union-attr]
    if truth is None or meta is None:
        raise DownloadFailed(f"{devkit} lacks data/ILSVRC2012_validation_ground_truth.txt or data/meta.mat")
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    return [wnid_of[int(line)] for line in truth.split()]


def sort_val_archive(
    val_tar: Path, devkit: Path, destination: Path, *, progress: Progress = no_progress
) -> int:
    """Stream the flat val tar into ``destination/<wnid>/<file>``; return the number of images."""
    wnids = devkit_val_wnids(devkit)
    count = 0
    with tarfile.open(val_tar) as tf:
        for member in tf:
            name = Path(member.name).name
            if not member.isfile() or not name.startswith("ILSVRC2012_val_"):
                continue
            number = int(name.split("_")[-1].split(".")[0])
            target = destination / wnids[number - 1] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(member) as source, open(target, "wb") as out:  # type: ignore[union-attr]
                out.write(source.read())
            count += 1
            if count % 1000 == 0:
                progress(count / len(wnids), f"sorted {count:,} val images")
    return count


# --------------------------------------------------------------------------------------------
# ImageNet-C
# --------------------------------------------------------------------------------------------
IMAGENET_C_ARCHIVES = {
    # Zenodo record 2235448 (Hendrycks & Dietterich); md5s as published there.
    "noise": download.Archive(
        "https://zenodo.org/records/2235448/files/noise.tar?download=1",
        "noise.tar",
        md5="e80562d7f6c3f8834afb1ecf27252745",
    ),
    "blur": download.Archive(
        "https://zenodo.org/records/2235448/files/blur.tar?download=1",
        "blur.tar",
        md5="2d8e81fdd8e07fef67b9334fa635e45c",
    ),
    "weather": download.Archive(
        "https://zenodo.org/records/2235448/files/weather.tar?download=1",
        "weather.tar",
        md5="33ffea4db4d93fe4a428c40a6ce0c25d",
    ),
    "digital": download.Archive(
        "https://zenodo.org/records/2235448/files/digital.tar?download=1",
        "digital.tar",
        md5="89157860d7b10d5797849337ca2e5c03",
    ),
    "extra": download.Archive(
        "https://zenodo.org/records/2235448/files/extra.tar?download=1",
        "extra.tar",
        md5="d492dfba5fc162d8ec2c3cd8ee672984",
    ),
}
IMAGENET_C_PER_SET = 50_000


class ImageNetCDataset(Dataset):
    name = folder = "imagenet-c"
    title = "ImageNet-C"
    aliases = ("imagenetc", "imagenet_c")

    def present(self, root: Path | str) -> bool:
        folder = self.path(root)
        return any((folder / c / "1").is_dir() for c in corruptions())

    def _scan(
        self, folder: Path, report: VerifyReport, include_extra: bool
    ) -> list[tuple[str, int, list[str], np.ndarray]]:
        """(corruption, severity, relpaths, labels) per set found; missing sets become warnings."""
        if not folder.is_dir():
            report.error(f"{folder} does not exist; run `runner data prepare {self.name}`")
            return []
        labels_of = label_index("imagenet")
        sets = []
        previous: list[str] | None = None
        names = (*corruptions(), *extra_corruptions()) if include_extra else corruptions()
        for name in names:
            extra = name not in corruptions()
            if not (folder / name).is_dir():
                if not extra:
                    report.warnings.append(f"{name} is missing: its CE cannot be computed")
                continue
            for severity in SEVERITIES:
                set_folder = folder / name / str(severity)
                if not set_folder.is_dir():
                    report.warnings.append(f"{name}/{severity} is missing")
                    continue
                relpaths, labels, outside = scan_tree(set_folder, labels_of)
                if outside:
                    report.warnings.append(
                        f"{name}/{severity}: {len(outside)} folders that are no ImageNet class"
                    )
                if previous is not None and relpaths == previous:
                    relpaths = previous  # the same 50,000 val files in every set: keep one list
                previous = relpaths
                report.counts[f"{name}/{severity}"] = len(relpaths)
                sets.append((name, severity, relpaths, labels))
        # One warning for all sets whose size differs from the release's, not one per set.
        short = [
            f"{name}/{level}: {len(rels):,}"
            for name, level, rels, _ in sets
            if len(rels) != IMAGENET_C_PER_SET
        ]
        if short:
            report.warnings.append(
                f"{len(short)} of {len(sets)} corruption/severity sets differ from the release's "
                f"{IMAGENET_C_PER_SET:,} images ({', '.join(short[:3])}{' …' if len(short) > 3 else ''})"
            )
        report.expected["images per set"] = IMAGENET_C_PER_SET
        if not any(name in corruptions() for name, *_ in sets):
            report.error(f"no corruption of the 15 under {folder}")
        return sets

    def verify(self, root: Path | str, *, deep: bool = False) -> VerifyReport:
        folder = self.path(root)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        sets = self._scan(folder, report, include_extra=True)
        extras = sorted({name for name, *_ in sets if name not in corruptions()})
        if extras:
            report.notes.append(f"extra corruptions present (never in top1 or mCE): {', '.join(extras)}")
        return report

    def open(self, root: Path | str, *, include_extra: bool = True, **_: Any) -> ImageFileReader:
        folder = self.path(root)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        sets = self._scan(folder, report, include_extra)
        report.raise_if_missing()
        image_sets, labels, corruption, severity, listing = [], [], [], [], []
        for name, level, relpaths, set_labels in sets:
            group = {"corruption": name, "severity": level, "extra": name not in corruptions()}
            image_sets.append(
                ImageSet(folder / name / str(level), relpaths, group, id_prefix=f"{name}/{level}/")
            )
            labels.append(set_labels)
            corruption.append(np.full(len(relpaths), name, dtype=object))
            severity.append(np.full(len(relpaths), level, dtype=np.int8))
            listing.append((f"{name}/{level}", len(relpaths)))
        targets = Targets(
            labels=np.concatenate(labels),
            corruption=np.concatenate(corruption),
            severity=np.concatenate(severity),
        )
        first = sets[0]
        set_fingerprint = listing_fingerprint(sized_listing(folder / first[0] / str(first[1]), first[2]))
        env = base_env(
            self.name,
            folder,
            report,
            preprocessing=CENTER_CROP,
            severity_block=IMAGENET_C_PER_SET,
            extra_corruptions_present=sorted({n for n, *_ in sets if n not in corruptions()}),
            dataset_checksum=f"{listing_fingerprint(listing)} first-set {set_fingerprint}",
        )
        return ImageFileReader(self.name, image_sets, CENTER_CROP, targets, env)

    def prepare(
        self,
        root: Path | str,
        progress: Progress | None = None,
        *,
        include_extra: bool = False,
        keep_archives: bool = False,
    ) -> VerifyReport:
        """Download the four Zenodo tars (about 47 GB; ``include_extra`` adds extra.tar, 15 GB) and
        unpack each into ``imagenet-c/``, deleting an archive once it is unpacked."""
        progress = progress or no_progress
        folder = self.path(root)
        groups = [g for g in IMAGENET_C_ARCHIVES if g != "extra" or include_extra]
        for number, group in enumerate(groups):

            def step(fraction: float, message: str, _n: int = number) -> None:
                progress((_n + fraction) / len(groups), message)

            archive = download.fetch(IMAGENET_C_ARCHIVES[group], downloads_folder(root), progress=step)
            top = download.extract(archive, folder, progress=step)
            if top == [group]:  # a tar that wraps its corruptions in the group's folder
                download.move_children_up(folder, group)
            if not keep_archives:
                archive.unlink()
        return self.verify(root)

    def fake(
        self,
        root: Path | str,
        *,
        n_per_class: int = 1,
        seed: int = 0,
        classes: int | Sequence[str] | None = 3,
        extras: bool = True,
        **_: Any,
    ) -> Path:
        """224×224 JPEGs (quality 85, as the release) for every corruption × severity × class."""
        folder = self.path(root)
        wnids = _choose_wnids(classes, label_wnids("imagenet"), default_fake_wnids())
        rng = np.random.default_rng(seed)
        index = data_files.imagenet_index()
        clean = {}
        number = 0
        others = [index[w] for w in wnids]
        for wnid in wnids:
            for _ in range(n_per_class):
                number += 1
                image = synth.pattern(index[wnid], 224, 224, rng)
                clean[(wnid, number)] = synth.distract(image, FAKE_SHIFT["imagenet/val"][0], rng, others=others)
        names = (*corruptions(), *extra_corruptions()) if extras else corruptions()
        for c_index, name in enumerate(names):
            for severity in SEVERITIES:
                for (wnid, number), image in clean.items():
                    corrupted = synth.corrupt(image[None], c_index, severity, rng)[0]
                    path = folder / name / str(severity) / wnid / f"ILSVRC2012_val_{number:08d}.JPEG"
                    _write_jpeg(path, corrupted, quality=85)
        write_marker(
            folder,
            self.title,
            seed=seed,
            details=f"{len(wnids)} classes × {n_per_class} images per corruption and severity; the fake val "
            f"images' patterns under stand-in corruptions ({', '.join(synth.CORRUPTION_KINDS)}; each hardens "
            "with severity at its own fixed rate), not the released ones.",
        )
        return folder


DATASET_VAL = ImageFolderDataset(
    "imagenet/val",
    title="ImageNet validation",
    aliases=("imagenet-val", "imagenet_val", "imagenet"),
    label_space="imagenet",
    total=50_000,
    classes=1000,
    archive=None,
    file_pattern="ILSVRC2012_val_{n:08d}.JPEG",
)
DATASET_A = ImageFolderDataset(
    "imagenet-a",
    title="ImageNet-A",
    aliases=("imagenet_a", "imageneta"),
    label_space="imagenet_a",
    total=7_500,
    classes=200,
    file_pattern="fake_{n:05d}.jpg",
    archive=download.Archive(
        "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
        "imagenet-a.tar",
        md5="c3e55429088dc681f30d81f4726b6595",
    ),
)
DATASET_R = ImageFolderDataset(
    "imagenet-r",
    title="ImageNet-R",
    aliases=("imagenet_r", "imagenetr"),
    label_space="imagenet_r",
    total=30_000,
    classes=200,
    file_pattern="art_{n}.jpg",
    archive=download.Archive(
        "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
        "imagenet-r.tar",
        md5="a61312130a589d0ca1a8fca1f2bd3337",
    ),
)
DATASET_C = ImageNetCDataset()
