"""CIFAR-10, CIFAR-100 (python pickles) and CIFAR-10-C, CIFAR-100-C (.npy per corruption).

Reading these pickles is reading a trusted, checksummed dataset, never submitted data.

The module is one piece because each dataset's protocol methods (present, verify, prepare, fake,
open) read one release's files and the -C sets share the clean sets' release table; split
apart, each half would need the other's constants.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
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
    listing_fingerprint,
    write_marker,
)
from runner.datasets.readers import ArrayBlock, ArrayReader, CorruptionArrayReader
from runner.progress import Progress, no_progress

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_FINE_NAMES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman "
    "worm".split()
)
CIFAR100_COARSE_NAMES = tuple(
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals "
    "trees vehicles_1 vehicles_2".split()
)


@dataclass(frozen=True)
class CifarRelease:
    folder: str
    archive: download.Archive
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    md5: dict[str, str]
    rows: dict[str, int]
    label_key: str
    names_key: str
    names: tuple[str, ...]


CIFAR10 = CifarRelease(
    folder="cifar-10-batches-py",
    archive=download.Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    # Per-file md5s as published with the release and used by torchvision's CIFAR10.
    md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    rows={**{f"data_batch_{i}": 10_000 for i in range(1, 6)}, "test_batch": 10_000},
    label_key="labels",
    names_key="label_names",
    names=CIFAR10_NAMES,
)
CIFAR100 = CifarRelease(
    folder="cifar-100-python",
    archive=download.Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    rows={"train": 50_000, "test": 10_000},
    label_key="fine_labels",
    names_key="fine_label_names",
    names=CIFAR100_FINE_NAMES,
)


# Fake images: the class pattern blended with another class's by a weight drawn from [0, 2·FAKE_BLEND],
# so a model trained on clean patterns gets most, not all, of the clean test split right.
FAKE_BLEND = 0.12


def _fake_image(label: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [32, 32, 3] of class ``label`` for the fake copies."""
    return synth.distract(synth.pattern(label, 32, 32, rng), FAKE_BLEND, rng, others=range(classes))


def read_pickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")  # trusted dataset file (see the module docstring)


class CifarDataset(Dataset):
    def __init__(self, release: CifarRelease, *, title: str, aliases: tuple[str, ...]):
        self.release = release
        self.name = self.folder = release.folder
        self.title = title
        self.aliases = aliases

    @property
    def num_classes(self) -> int:
        return len(self.release.names)

    def present(self, root: Path | str) -> bool:
        folder = self.path(root)
        return all(
            (folder / f).is_file()
            for f in (*self.release.train_files, self.release.test_file, self.release.meta_file)
        )

    def verify(self, root: Path | str, *, deep: bool = False) -> VerifyReport:
        """File md5s against the release (always: the files are small) and rows per file."""
        folder = self.path(root)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        if not folder.is_dir():
            report.error(f"{folder} does not exist; run `runner data prepare {self.name}`")
            return report
        for name, expected_md5 in self.release.md5.items():
            path = folder / name
            if not path.is_file():
                report.error(f"{path} is missing")
                continue
            report.checksum(name, file_digest(path, "md5"), expected_md5)
            if name in self.release.rows:
                try:
                    rows = len(read_pickle(path)[self.release.label_key])
                except (OSError, pickle.UnpicklingError, KeyError, EOFError) as exc:
                    report.error(f"{path} is unreadable: {exc}")
                    continue
                report.count(name, rows, self.release.rows[name])
        return report

    def prepare(self, root: Path | str, progress: Progress | None = None) -> VerifyReport:
        download.fetch_and_extract(self.release.archive, root, progress=progress or no_progress)
        return self.verify(root)

    def load_split(self, root: Path | str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images [N, 32, 32, 3], int64 labels [N]) of ``train`` or ``test``."""
        images, labels, _ = self._read_split(root, split)
        return images, labels

    def _read_split(self, root: Path | str, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        """The split's images and labels, and each file's md5, from one read of each file."""
        folder = self.path(root)
        files = self.release.train_files if split == "train" else (self.release.test_file,)
        if split not in ("train", "test"):
            raise ValueError(f"split must be train or test, not {split!r}")
        images, labels, md5 = [], [], {}
        for name in files:
            path = folder / name
            if not path.is_file():
                raise DatasetMissing(f"{path} is missing; run `runner data prepare {self.name}`")
            data = path.read_bytes()
            md5[name] = hashlib.md5(data).hexdigest()
            batch = pickle.loads(data, encoding="latin1")  # trusted dataset file (see the module docstring)
            images.append(
                np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            )
            labels.append(np.asarray(batch[self.release.label_key], dtype=np.int64))
        return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), md5

    def open(self, root: Path | str, *, split: str = "test", **_: Any) -> ArrayReader:
        folder = self.path(root)
        images, labels, md5 = self._read_split(root, split)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        checked = self.release.train_files if split == "train" else (self.release.test_file,)
        for name in checked:
            report.checksum(name, md5[name], self.release.md5[name])
        report.count(split, len(labels), sum(self.release.rows[n] for n in checked))
        env = base_env(
            self.name,
            folder,
            report,
            split=split,
            preprocessing="none (32×32, /255)",
            dataset_checksum="md5:" + report.checksums[checked[-1]],
        )
        return ArrayReader(self.name, images, Targets(labels=labels), env)

    def fake(self, root: Path | str, *, n_per_class: int = 2, seed: int = 0, **_: Any) -> Path:
        """Pickles in the release's layout; ``n_per_class`` images per class in each file."""
        folder = self.path(root)
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        classes = self.num_classes
        for name in (*self.release.train_files, self.release.test_file):
            labels = np.repeat(np.arange(classes), n_per_class)
            rng.shuffle(labels)
            images = np.stack([_fake_image(int(c), classes, rng) for c in labels])
            batch: dict[str, Any] = {
                "batch_label": f"fake {name}",
                "data": images.transpose(0, 3, 1, 2).reshape(len(labels), 3072),
                "filenames": [f"fake_{name}_{i:05d}.png" for i in range(len(labels))],
                self.release.label_key: [int(c) for c in labels],
            }
            if self.release is CIFAR100:
                batch["coarse_labels"] = [int(c) // 5 for c in labels]  # not the real grouping (fake)
            with open(folder / name, "wb") as fh:
                pickle.dump(batch, fh, protocol=2)
        meta: dict[str, Any] = {self.release.names_key: list(self.release.names)}
        if self.release is CIFAR100:
            meta["coarse_label_names"] = list(CIFAR100_COARSE_NAMES)
        else:
            meta.update(num_cases_per_batch=classes * n_per_class, num_vis=3072)
        with open(folder / self.release.meta_file, "wb") as fh:
            pickle.dump(meta, fh, protocol=2)
        write_marker(
            folder,
            self.title,
            seed=seed,
            details=f"{n_per_class} images per class in each file; class-coloured stripes, not photographs, "
            f"each blended with another class's by up to {2 * FAKE_BLEND:.0%}.",
        )
        return folder


# --------------------------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C
# --------------------------------------------------------------------------------------------
def corruptions() -> tuple[str, ...]:
    return tuple(data_files.load("imagenet_c")["corruptions"])


def extra_corruptions() -> tuple[str, ...]:
    return tuple(data_files.load("imagenet_c")["extra_corruptions"])


SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class CorruptedRelease:
    folder: str
    archive: download.Archive
    md5: dict[str, str]  # per .npy file, as published with the release (torch-uncertainty lists them)
    rows: int
    classes: int


CIFAR10_C = CorruptedRelease(
    folder="CIFAR-10-C",
    archive=download.Archive(
        "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar?download=1",
        "CIFAR-10-C.tar",
        md5="56bf5dcef84df0e2308c6dcbcbbd8499",
    ),
    md5={
        "fog": "7b397314b5670f825465fbcd1f6e9ccd",
        "jpeg_compression": "2b9cc4c864e0193bb64db8d7728f8187",
        "zoom_blur": "6ea8e63f1c5cdee1517533840641641b",
        "speckle_noise": "ef00b87611792b00df09c0b0237a1e30",
        "glass_blur": "7361fb4019269e02dbf6925f083e8629",
        "spatter": "8a5a3903a7f8f65b59501a6093b4311e",
        "shot_noise": "3a7239bb118894f013d9bf1984be7f11",
        "defocus_blur": "7d1322666342a0702b1957e92f6254bc",
        "elastic_transform": "9421657c6cd452429cf6ce96cc412b5f",
        "gaussian_blur": "c33370155bc9b055fb4a89113d3c559d",
        "frost": "31f6ab3bce1d9934abfb0cc13656f141",
        "saturate": "1cfae0964219c5102abbb883e538cc56",
        "brightness": "0a81ef75e0b523c3383219c330a85d48",
        "snow": "bb238de8555123da9c282dea23bd6e55",
        "gaussian_noise": "ecaf8b9a2399ffeda7680934c33405fd",
        "motion_blur": "fffa5f852ff7ad299cfe8a7643f090f4",
        "contrast": "3c8262171c51307f916c30a3308235a8",
        "impulse_noise": "2090e01c83519ec51427e65116af6b1a",
        "labels": "c439b113295ed5254878798ffe28fd54",
        "pixelate": "0f14f7e2db14288304e1de10df16832f",
    },
    rows=50_000,
    classes=10,
)
CIFAR100_C = CorruptedRelease(
    folder="CIFAR-100-C",
    archive=download.Archive(
        "https://zenodo.org/records/3555552/files/CIFAR-100-C.tar?download=1",
        "CIFAR-100-C.tar",
        md5="11f0ed0f1191edbf9fa23466ae6021d3",
    ),
    md5={
        "fog": "4efc7ebd5e82b028bdbe13048e3ea564",
        "jpeg_compression": "c851b7f1324e1d2ffddeb76920576d11",
        "zoom_blur": "0204613400c034a81c4830d5df81cb82",
        "speckle_noise": "e3f215b1a0f9fd9fd6f0d1cf94a7ce99",
        "glass_blur": "0bf384f38e5ccbf8dd479d9059b913e1",
        "spatter": "12ccf41d62564d36e1f6a6ada5022728",
        "shot_noise": "b0a1fa6e1e465a747c1b204b1914048a",
        "defocus_blur": "d923e3d9c585a27f0956e2f2ad832564",
        "elastic_transform": "a0792bd6581f6810878be71acedfc65a",
        "gaussian_blur": "5204ba0d557839772ef5a4196a052c3e",
        "frost": "3a39c6823bdfaa0bf8b12fe7004b8117",
        "saturate": "c0697e9fdd646916a61e9c312c77bf6b",
        "brightness": "f22d7195aecd6abb541e27fca230c171",
        "snow": "0237be164583af146b7b144e73b43465",
        "gaussian_noise": "ecc4d366eac432bdf25c024086f5e97d",
        "motion_blur": "732a7e2e54152ff97c742d4c388c5516",
        "contrast": "322bb385f1d05154ee197ca16535f71e",
        "impulse_noise": "3b3c210ddfa0b5cb918ff4537a429fef",
        "labels": "bb4026e9ce52996b95f439544568cdb2",
        "pixelate": "96c00c60f144539e14cffb02ddbd0640",
    },
    rows=50_000,
    classes=100,
)


class CifarCorruptedDataset(Dataset):
    def __init__(self, release: CorruptedRelease, *, title: str, aliases: tuple[str, ...]):
        self.release = release
        self.name = self.folder = release.folder
        self.title = title
        self.aliases = aliases

    def present(self, root: Path | str) -> bool:
        folder = self.path(root)
        return (folder / "labels.npy").is_file() and any(
            (folder / f"{c}.npy").is_file() for c in corruptions()
        )

    def _labels(self, folder: Path) -> np.ndarray:
        path = folder / "labels.npy"
        if not path.is_file():
            raise DatasetMissing(f"{path} is missing; run `runner data prepare {self.name}`")
        labels = np.load(path)
        if labels.ndim != 1 or len(labels) % 5:
            raise DatasetMissing(f"{path} holds {labels.shape} labels, not five equal severity blocks")
        return labels.astype(np.int64)

    def _inspect(
        self, folder: Path, report: VerifyReport, *, deep: bool
    ) -> tuple[np.ndarray | None, list[str]]:
        """Check labels and every corruption file; return the labels and the usable corruptions."""
        try:
            labels = self._labels(folder)
        except DatasetMissing as exc:
            report.error(exc.message)
            return None, []
        report.count("labels.npy rows", len(labels), self.release.rows)
        report.checksum("labels.npy", file_digest(folder / "labels.npy", "md5"), self.release.md5["labels"])
        usable = []
        for name in (*corruptions(), *extra_corruptions()):
            path = folder / f"{name}.npy"
            if not path.is_file():
                if name in corruptions():
                    report.warnings.append(f"{name}.npy is missing: {name} is left out of the mean")
                continue
            array = np.load(path, mmap_mode="r")
            if array.shape[1:] != (32, 32, 3) or array.dtype != np.uint8 or len(array) != len(labels):
                report.error(
                    f"{path} has shape {array.shape} {array.dtype}, expected "
                    f"[{len(labels)}, 32, 32, 3] uint8 like labels.npy"
                )
                continue
            report.counts[f"{name}.npy rows"] = len(array)
            if deep:
                report.checksum(f"{name}.npy", file_digest(path, "md5"), self.release.md5.get(name))
            usable.append(name)
        if not any(name in corruptions() for name in usable):
            report.error(f"no corruption file of the 15 in {folder}")
        return labels, usable

    def verify(self, root: Path | str, *, deep: bool = False) -> VerifyReport:
        """labels.npy md5 and shapes always; ``deep`` also hashes every corruption file (3 GB)."""
        folder = self.path(root)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        if not folder.is_dir():
            report.error(f"{folder} does not exist; run `runner data prepare {self.name}`")
            return report
        self._inspect(folder, report, deep=deep)
        extras = [c for c in extra_corruptions() if (folder / f"{c}.npy").is_file()]
        if extras:
            report.notes.append(f"extra corruptions present (never in top1): {', '.join(extras)}")
        return report

    def prepare(self, root: Path | str, progress: Progress | None = None) -> VerifyReport:
        download.fetch_and_extract(self.release.archive, root, progress=progress or no_progress)
        return self.verify(root)

    def open(self, root: Path | str, *, include_extra: bool = True, **_: Any) -> CorruptionArrayReader:
        """Blocks in the order: the 15 corruptions (protocol order), then the extras; severity 1–5."""
        folder = self.path(root)
        report = VerifyReport(self.name, synthetic=is_synthetic(folder))
        labels, usable = self._inspect(folder, report, deep=False)
        report.raise_if_missing()
        assert labels is not None
        block = len(labels) // 5
        standard = set(corruptions())
        names = [c for c in usable if c in standard or include_extra]
        blocks, label_parts, corruption_parts, severity_parts = [], [], [], []
        for name in names:
            for severity in SEVERITIES:
                start = (severity - 1) * block
                group = {"corruption": name, "severity": severity, "extra": name not in standard}
                blocks.append(ArrayBlock(folder / f"{name}.npy", start, start + block, group))
                label_parts.append(labels[start : start + block])
                corruption_parts.append(np.full(block, name, dtype=object))
                severity_parts.append(np.full(block, severity, dtype=np.int8))
        targets = Targets(
            labels=np.concatenate(label_parts),
            corruption=np.concatenate(corruption_parts),
            severity=np.concatenate(severity_parts),
        )
        listing = [(f"{n}.npy", (folder / f"{n}.npy").stat().st_size) for n in names]
        env = base_env(
            self.name,
            folder,
            report,
            preprocessing="none (32×32, /255)",
            severity_block=block,
            extra_corruptions_present=[n for n in names if n not in standard],
            dataset_checksum=f"labels-md5:{report.checksums['labels.npy']} {listing_fingerprint(listing)}",
        )
        return CorruptionArrayReader(self.name, blocks, targets, env)

    def fake(
        self, root: Path | str, *, n_per_class: int = 2, seed: int = 0, extras: bool = True, **_: Any
    ) -> Path:
        """``<corruption>.npy`` for the 15 (and the 4 extras) + labels.npy, 5 severity blocks each."""
        folder = self.path(root)
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        labels = np.repeat(np.arange(self.release.classes), n_per_class)
        rng.shuffle(labels)
        clean = np.stack([_fake_image(int(c), self.release.classes, rng) for c in labels])
        names = (*corruptions(), *extra_corruptions()) if extras else corruptions()
        for index, name in enumerate(names):
            blocks = [synth.corrupt(clean, index, severity, rng) for severity in SEVERITIES]
            np.save(folder / f"{name}.npy", np.concatenate(blocks))
        np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))
        write_marker(
            folder,
            self.title,
            seed=seed,
            details=f"{len(labels)} images per severity; stand-in corruptions ({', '.join(synth.CORRUPTION_KINDS)}"
            "; each hardens with severity at its own fixed rate), not the released ones.",
        )
        return folder
