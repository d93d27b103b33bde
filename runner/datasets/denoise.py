"""Denoising test sets on the datasets protocol (runner/datasets/base.py): one
:class:`DenoiseDataset` per set in the registry (``denoise/<set>``: ``present``, ``verify``,
``prepare``, ``fake``, ``open``), whose ``open`` gives a :class:`DenoiseSet` reader; beneath them the
set-level functions (:func:`open_set`, :func:`verify`, :func:`prepare`, :func:`fake`), and the two
sets built from scikit-image's bundled photographs.

Every image is returned as a float32 array ``H×W×C`` in [0, 1] (C = 1 for grayscale sets, 3 for
colour), keyed by file stem, in stem order.

How the protocol fits images without labels: a denoising set's targets are its clean images, which
stay in the parent like every reader's labels (``DenoiseSet.images``; ``targets`` holds no labels);
its batches hold one clean image each, ``[1, C, H, W]`` (the sets mix sizes and orientations), for
the track to draw the protocol's noise on (runner.denoise.noise) before any reaches a model. A set
that is missing or unreadable raises :class:`DatasetError`, a :class:`DatasetMissing` like every
reader's.

The module is one piece, as cifar.py and imagenet.py are: the sets' sources, reading, checks,
download and fakes are one dataset family's life cycle, and the registry's classes at the end are
thin over the set-level functions.

Where the sets live (shared/PROTOCOLS.md, "Data root layout"): ``<root>/denoise/<set>/*.png``.
``skimage-gray`` and ``skimage-color`` need no root: they are cut from the photographs that ship
inside scikit-image (real data, always available, never marked synthetic).

Sources. None of BSD68, Set12, CBSD68 or Kodak has an official download of the files papers score
on, so ``prepare`` fetches the copies the denoising literature uses, pinned to a git commit, and
checks each file against the git blob SHA-1 that the commit's tree records (git is
content-addressed, so a pinned commit names exactly one set of bytes):

- BSD68: the 68 test images Roth & Black (Fields of Experts, 2005) chose from the BSDS300 test
  split. Berkeley's official archive (``BSDS300-images.tgz``) holds only the colour JPEG
  originals; the grayscale PNGs are the DnCNN authors' (cszn/DnCNN, ``testsets/BSD68``).
- Set12: twelve classic test images assembled by the DnCNN authors; no official source. Pinned
  copy: JingyunLiang/SwinIR ``testsets/Set12``.
- CBSD68: the colour PNGs of the same 68 images, as shared by the same authors (cszn/IRCNN,
  ``testsets/CBSD68``).
- Kodak: the 24 images of the Kodak Lossless True Color Image Suite. Kodak released them on Photo
  CD and hosts no download today (the usual mirror is r0k.us/graphics/kodak, which publishes no
  checksums); pinned copy: cszn/FFDNet ``testsets/Kodak24``.

``prepare`` records each file's SHA-256 in ``MANIFEST.json`` beside the images, and ``verify``
checks the folder against it offline. Per the platform's rules a count or checksum that differs is
a warning (``verify(...)["warnings"]``, to be recorded in the result's env), a missing set an error.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner.datasets.base import (
    FAKE_MARKER,
    Batch,
    Dataset,
    DatasetMissing,
    DownloadFailed,
    Reader,
    Targets,
    VerifyReport,
    file_digest,
)
from runner.progress import Progress

MANIFEST = "MANIFEST.json"
SKIMAGE_CROP = 256  # skimage images are centre-cropped to at most this many pixels a side


@dataclass(frozen=True)
class GitHubSource:
    repo: str
    commit: str
    folder: str
    count: int
    note: str
    # File names, where they follow a pattern, so a download can go ahead when the API that lists
    # a folder is out of reach (the files are then checked only for count).
    names: tuple[str, ...] = ()

    def listing_url(self) -> str:
        return f"https://api.github.com/repos/{self.repo}/contents/{self.folder}?ref={self.commit}"

    def raw_url(self, name: str) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.folder}/{name}"


@dataclass(frozen=True)
class SetInfo:
    name: str
    title: str
    channels: int
    source: GitHubSource | None = None
    # scikit-image sets: (stem, skimage.data function, convert colour to gray)
    photographs: tuple[tuple[str, str], ...] = ()
    expected_sha256: str = ""  # pinned digest of a bundled set's pixels (see set_sha256)


SOURCES = {
    "bsd68": GitHubSource(
        "cszn/DnCNN", "55fdeb2ac82c8c8cae6e281dae2b8e87e2d47a4d", "testsets/BSD68", 68,
        "BSDS300 test images chosen by Roth & Black, grayscale PNGs by the DnCNN authors",
        tuple(f"test{i:03d}.png" for i in range(1, 69)),
    ),
    "set12": GitHubSource(
        "JingyunLiang/SwinIR", "33f616625268d08ba600f8db89388eec0328edb1", "testsets/Set12", 12,
        "twelve classic grayscale test images assembled by the DnCNN authors (no official source)",
        tuple(f"{i:02d}.png" for i in range(1, 13)),
    ),
    "cbsd68": GitHubSource(
        "cszn/IRCNN", "938f6a7fc9f12df9188da838fc2cec4bcca06976", "testsets/CBSD68", 68,
        "colour PNGs of BSD68's images as shared by the DnCNN/IRCNN authors (file stems are BSDS ids)",
    ),
    "kodak": GitHubSource(
        "cszn/FFDNet", "a68d544599bb9bb2f89da51ab9e18458fa882023", "testsets/Kodak24", 24,
        "Kodak Lossless True Color Image Suite; Kodak hosts no download (mirror: r0k.us/graphics/kodak)",
        tuple(f"kodim{i:02d}.png" for i in range(1, 25)),
    ),
}

# Photographs bundled with scikit-image that load offline. The test sets and the Noise2Score
# training images never share a photograph.
SKIMAGE_GRAY = (("camera", "camera"), ("moon", "moon"), ("coins", "coins"), ("text", "text"),
                ("brick", "brick"), ("grass", "grass"), ("astronaut", "astronaut"), ("coffee", "coffee"))
SKIMAGE_COLOR = (("astronaut", "astronaut"), ("chelsea", "chelsea"), ("coffee", "coffee"),
                 ("rocket", "rocket"), ("immunohistochemistry", "immunohistochemistry"),
                 ("retina", "retina"))
# Where the centre would miss the picture's content (the retina's centre is a flat orange field),
# the crop's top-left corner is named here.
SKIMAGE_CROP_ORIGIN = {"retina": (492, 150)}
SKIMAGE_TRAINING = ("stereo_motorcycle", "hubble_deep_field", "gravel", "clock", "cell", "page")

SETS: dict[str, SetInfo] = {
    "bsd68": SetInfo("bsd68", "BSD68", 1, SOURCES["bsd68"]),
    "set12": SetInfo("set12", "Set12", 1, SOURCES["set12"]),
    "cbsd68": SetInfo("cbsd68", "CBSD68", 3, SOURCES["cbsd68"]),
    "kodak": SetInfo("kodak", "Kodak24", 3, SOURCES["kodak"]),
    "skimage-gray": SetInfo("skimage-gray", "scikit-image photographs (grayscale)", 1,
                            photographs=SKIMAGE_GRAY,
                            expected_sha256="b57cccd50433ca05ca186e41fda57263f2254a6aba58f4befe1c3dbd450095eb"),
    "skimage-color": SetInfo("skimage-color", "scikit-image photographs (colour)", 3,
                             photographs=SKIMAGE_COLOR,
                             expected_sha256="708acfb47255ed8289eee9b21289da8580dc782aaf8ecc23d5dac07ab9e69202"),
}


class DatasetError(DatasetMissing):
    """A set that is missing or cannot be read (an infrastructure error: ``dataset_missing``)."""


@dataclass
class DenoiseSet(Reader):
    """A loaded set, the reader of a denoising task: its clean images (``images``: stem → float32
    ``H×W×C`` in [0, 1]), which are the targets and stay in this process, plus what a
    result's env must say about them."""

    name: str
    images: dict[str, np.ndarray]
    synthetic: bool
    sha256: str
    warnings: list[str] = field(default_factory=list)
    path: str = ""
    targets: Targets = field(default_factory=Targets)  # no labels: the clean images are the targets

    @property
    def size(self) -> int:  # type: ignore[override]
        return len(self.images)

    @property
    def channels(self) -> int:
        return SETS[self.name].channels

    @property
    def env(self) -> dict[str, Any]:  # type: ignore[override]
        """The dataset part of a result's env: name, path, digest, synthetic flag, warnings, count."""
        return {
            "dataset": self.name,
            "dataset_path": self.path,
            "dataset_sha256": self.sha256,
            "synthetic_data": self.synthetic,
            "dataset_warnings": list(self.warnings),
            "n_images": len(self.images),
        }

    def batches(self, batch_size: int = 1, *, workers: int = 0, device: str = "cpu") -> Iterator[Batch]:
        """One clean image per batch, whatever ``batch_size`` (sizes differ within a set): float32
        ``[1, C, H, W]`` in [0, 1] (numpy on the CPU, a torch tensor on another ``device``), in the
        order of ``images``. ``workers`` is ignored: the images are in memory already."""
        for position, (stem, image) in enumerate(self.images.items()):
            inputs: Any = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
            if device != "cpu":
                import torch

                inputs = torch.from_numpy(inputs).to(device)
            yield Batch(inputs, np.array([position]), [stem])


def set_info(name: str) -> SetInfo:
    try:
        return SETS[name]
    except KeyError:
        raise DatasetError(f"unknown denoising set {name!r}; expected one of {', '.join(SETS)}") from None


def set_dir(name: str, root: str | Path) -> Path:
    return Path(root) / "denoise" / name


def is_bundled(name: str) -> bool:
    return bool(set_info(name).photographs)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _to_float(pixels: np.ndarray, channels: int) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] != channels:
        raise DatasetError(f"an image with {pixels.shape[2]} channels in a {channels}-channel set")
    return (pixels.astype(np.float32) / np.float32(255.0))


def read_png(path: str | Path, channels: int) -> np.ndarray:
    """One PNG as float32 ``H×W×C`` in [0, 1]. A grayscale set stores single-channel PNGs; a colour
    PNG found there is refused rather than silently converted."""
    from PIL import Image

    with Image.open(path) as im:
        if channels == 1:
            if im.mode not in ("L", "P", "1"):
                bands = np.asarray(im.convert("RGB"))
                if not (np.array_equal(bands[..., 0], bands[..., 1])
                        and np.array_equal(bands[..., 0], bands[..., 2])):
                    raise DatasetError(f"{path} is a colour image in a grayscale set")
                return _to_float(bands[..., 0], 1)
            return _to_float(np.asarray(im.convert("L")), 1)
        return _to_float(np.asarray(im.convert("RGB")), 3)


def _skimage_pixels(function: str, channels: int) -> np.ndarray:
    """A bundled photograph as uint8, cropped to at most SKIMAGE_CROP a side (centred unless
    SKIMAGE_CROP_ORIGIN says otherwise); colour
    photographs in a grayscale set go through ``skimage.color.rgb2gray`` and are rounded to 8 bits
    (so the set is the same whether held in memory or written as PNG)."""
    import skimage.data
    from skimage.color import rgb2gray

    pixels = getattr(skimage.data, function)()
    if isinstance(pixels, tuple):  # stereo pairs
        pixels = pixels[0]
    h, w = pixels.shape[:2]
    top, left = SKIMAGE_CROP_ORIGIN.get(function, (max(0, (h - SKIMAGE_CROP) // 2),
                                                   max(0, (w - SKIMAGE_CROP) // 2)))
    pixels = pixels[top:top + SKIMAGE_CROP, left:left + SKIMAGE_CROP]
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[:, :, :3]
    if channels == 1 and pixels.ndim == 3:
        pixels = np.round(rgb2gray(pixels) * 255.0).astype(np.uint8)
    if pixels.dtype != np.uint8:
        raise DatasetError(f"skimage.data.{function} is not 8-bit")
    return pixels


def _pixels_sha256(images: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for stem in sorted(images):
        pixels = np.round(images[stem] * 255.0).astype(np.uint8)
        digest.update(f"{stem}:{pixels.shape}".encode() + b"\0" + pixels.tobytes())
    return digest.hexdigest()


def _files_sha256(hashes: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(hashes):
        digest.update(f"{name}:{hashes[name]}\n".encode())
    return digest.hexdigest()


def _bundled(info: SetInfo) -> tuple[dict[str, np.ndarray], str]:
    """A scikit-image set's images and the digest of their pixels."""
    images = {stem: _to_float(_skimage_pixels(function, info.channels), info.channels)
              for stem, function in info.photographs}
    return images, _pixels_sha256(images)


def open_set(name: str, root: str | Path | None = None, *, stems: list[str] | None = None) -> DenoiseSet:
    """Load a set with its provenance. ``stems`` picks a subset (tests, smoke runs); the digest
    and the checks always cover the whole folder."""
    info = set_info(name)
    if info.photographs:
        images, digest = _bundled(info)
        warnings = [] if digest == info.expected_sha256 else [
            f"the bundled photographs' digest {digest[:16]}… differs from the pinned "
            f"{info.expected_sha256[:16]}… (another scikit-image release?)"]
        chosen = _pick(images, stems, name)
        return DenoiseSet(name, chosen, False, digest, warnings, f"skimage.data ({_skimage_version()})")
    if root is None:
        raise DatasetError(f"the {name} set needs a data root (it lives at <root>/denoise/{name}/)")
    report = verify(name, root)
    if not report["present"]:
        raise DatasetError(f"dataset {name} is missing: no PNG files under {report['path']} "
                           f"(run `runner data prepare denoise/{name}` or `runner data fake ...`)")
    folder = set_dir(name, root)
    wanted = None if stems is None else set(stems)
    images = {p.stem: read_png(p, info.channels) for p in sorted(folder.glob("*.png"))
              if wanted is None or p.stem in wanted}
    if wanted is not None and wanted - set(images):
        raise DatasetError(f"{name} has no image(s) {', '.join(sorted(wanted - set(images)))}")
    return DenoiseSet(name, images, report["synthetic"], report["sha256"], report["warnings"], str(folder))


def load_set(name: str, root: str | Path | None = None, *, stems: list[str] | None = None
             ) -> dict[str, np.ndarray]:
    """The clean images of a set, float32 ``H×W×C`` in [0, 1], keyed by file stem."""
    return open_set(name, root, stems=stems).images


def _pick(images: dict[str, np.ndarray], stems: list[str] | None, name: str) -> dict[str, np.ndarray]:
    if stems is None:
        return images
    missing = [s for s in stems if s not in images]
    if missing:
        raise DatasetError(f"{name} has no image(s) {', '.join(missing)}")
    return {s: images[s] for s in sorted(stems)}


def _skimage_version() -> str:
    import skimage

    return f"scikit-image {skimage.__version__}"


def training_images(channels: int = 1) -> dict[str, np.ndarray]:
    """Bundled photographs that no skimage test set uses, whole (not cropped), float32 ``H×W×C``;
    for training Noise2Score on real data offline. Grayscale via ``rgb2gray``; with
    ``channels=1`` each colour photograph also gives its three colour planes as gray images (the
    shipped networks denoise colour images one plane at a time)."""
    import skimage.data
    from skimage.color import rgb2gray

    out: dict[str, np.ndarray] = {}
    for function in SKIMAGE_TRAINING:
        pixels = getattr(skimage.data, function)()
        views = pixels[:2] if isinstance(pixels, tuple) else (pixels,)  # stereo: left and right views
        for v, view in enumerate(views):
            stem = function if len(views) == 1 else f"{function}_{v}"
            view = view[:, :, :3] if view.ndim == 3 else view
            if channels == 3:
                if view.ndim == 3:
                    out[stem] = _to_float(view, 3)
                continue
            if view.ndim == 2:
                out[stem] = _to_float(view, 1)
                continue
            out[stem] = rgb2gray(view).astype(np.float32)[:, :, None]
            for c, plane in enumerate("rgb"):
                out[f"{stem}_{plane}"] = _to_float(view[:, :, c], 1)
    return out


# --------------------------------------------------------------------------------------------
# Verify, prepare, fake
# --------------------------------------------------------------------------------------------
def verify(name: str, root: str | Path) -> dict:
    """Check a set's folder: file count against the release and each file's SHA-256 against the
    MANIFEST.json that ``prepare`` wrote. Never raises for a difference: it lands in
    ``warnings``. ``present`` is False when there are no PNGs at all."""
    info = set_info(name)
    folder = set_dir(name, root)
    report: dict = {"dataset": name, "path": str(folder), "present": False, "synthetic": False,
                    "files": 0, "expected_files": info.source.count if info.source else len(info.photographs),
                    "checksums": "unknown", "sha256": "", "warnings": []}
    if info.photographs:
        images, digest = _bundled(info)
        report.update(present=True, files=len(images), path=f"skimage.data ({_skimage_version()})",
                      sha256=digest)
        report["checksums"] = "ok" if report["sha256"] == info.expected_sha256 else "mismatch"
        if report["checksums"] == "mismatch":
            report["warnings"].append("bundled photographs differ from the pinned digest")
        return report
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not pngs:
        return report
    report["present"] = True
    report["files"] = len(pngs)
    report["synthetic"] = (folder / FAKE_MARKER).exists()
    hashes = {p.name: file_digest(p, "sha256") for p in pngs}
    report["sha256"] = _files_sha256(hashes)
    if report["synthetic"]:
        report["checksums"] = "synthetic"
        report["warnings"].append(f"synthetic data ({FAKE_MARKER} present): not the real {info.title}")
        return report
    if len(pngs) != report["expected_files"]:
        report["warnings"].append(f"{len(pngs)} PNG files where the release has {report['expected_files']}")
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        report["warnings"].append("no MANIFEST.json (not fetched by prepare): checksums unknown")
        return report
    manifest = json.loads(manifest_path.read_text())
    if not manifest.get("verified", False):
        report["warnings"].append("downloaded without the source's git blob ids (listing unreachable): "
                                  "checked against MANIFEST.json only")
    recorded = {n: e["sha256"] for n, e in manifest["files"].items()}
    changed = sorted(n for n in hashes if n in recorded and recorded[n] != hashes[n])
    extra = sorted(set(hashes) - set(recorded))
    absent = sorted(set(recorded) - set(hashes))
    report["checksums"] = "mismatch" if changed or extra or absent else "ok"
    for what, names in (("differ from MANIFEST.json", changed), ("not in MANIFEST.json", extra),
                        ("missing", absent)):
        if names:
            report["warnings"].append(f"{len(names)} file(s) {what}: {', '.join(names[:5])}")
    return report


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a file's content (what a commit's tree records)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "leaderboard-runner"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def prepare(name: str, root: str | Path, *, force: bool = False, retries: int = 3) -> Path:
    """Download a set into ``<root>/denoise/<name>/`` and verify every file.

    Steps: list the pinned commit's folder through the GitHub contents API (names and git blob
    ids); download each PNG from raw.githubusercontent.com at that commit; refuse a file whose git
    blob SHA-1 differs from the listing; write MANIFEST.json (source, commit, SHA-256 and blob id
    per file); move the folder into place. If the listing API is out of reach (rate limit) and the
    names follow a pattern, download by name and say so in MANIFEST.json (``verified: false``).
    Bundled sets need nothing: the function returns None for them.
    """
    info = set_info(name)
    if info.photographs:
        return None  # type: ignore[return-value]
    source = info.source
    assert source is not None
    target = set_dir(name, root)
    if target.exists() and any(target.glob("*.png")) and not force:
        if (target / FAKE_MARKER).exists():
            raise DatasetError(f"{target} holds a fake copy; pass force=True to replace it")
        return target
    try:
        listing = json.loads(_fetch(source.listing_url()))
        entries = {e["name"]: e["sha"] for e in listing if e.get("type") == "file"
                   and e["name"].lower().endswith(".png")}
        verified = True
    except Exception as exc:  # network or API refusal: fall back to the known names
        if not source.names:
            raise DatasetError(f"cannot list {source.repo}@{source.commit[:8]}/{source.folder}: {exc}") from exc
        entries = {n: "" for n in source.names}
        verified = False
    partial = target.parent / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    files = {}
    try:
        for file_name, blob in sorted(entries.items()):
            data = _download_with_retries(source.raw_url(file_name), retries)
            if blob and git_blob_sha1(data) != blob:
                raise DatasetError(f"{file_name}: content does not match git blob {blob} of "
                                   f"{source.repo}@{source.commit[:8]}")
            (partial / file_name).write_bytes(data)
            files[file_name] = {"sha256": hashlib.sha256(data).hexdigest(), "git_blob_sha1": git_blob_sha1(data),
                                "size": len(data)}
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    manifest = {"dataset": name, "source": f"https://github.com/{source.repo}/tree/{source.commit}/{source.folder}",
                "note": source.note, "verified": verified, "files": files}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if target.exists():
        shutil.rmtree(target)
    partial.replace(target)
    return target


def _download_with_retries(url: str, retries: int) -> bytes:
    import time

    last: Exception | None = None
    for attempt in range(retries):
        try:
            return _fetch(url)
        except Exception as exc:
            last = exc
            time.sleep(2 ** attempt)
    raise DatasetError(f"download failed after {retries} tries: {url}: {last}")


FAKE_TEXT = """SYNTHETIC DATA. These PNG files were generated by runner.datasets.denoise.fake; they
are not the {title} images. They exist for tests and smoke runs, and every result computed on
them carries env synthetic_data=true.
"""


def fake_image(seed: int, size: int, channels: int) -> np.ndarray:
    """A synthetic uint8 picture with the ingredients denoisers care about: smooth shading, sharp
    edges and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    planes = []
    for _ in range(channels):
        a, b, c = rng.uniform(-0.4, 0.4, 3)
        plane = 0.5 + a * xx + b * yy + c * xx * yy
        for _ in range(3):  # rectangles and a disc: edges
            y0, x0 = rng.integers(0, size * 3 // 4, 2)
            h, w = rng.integers(size // 8, size // 2, 2)
            plane[y0:y0 + h, x0:x0 + w] += rng.uniform(-0.3, 0.3)
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.25)
        plane[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.uniform(-0.3, 0.3)
        plane += 0.05 * np.sin(2 * np.pi * rng.uniform(4, 12) * (xx + rng.uniform() * yy))
        planes.append(plane)
    pixels = np.clip(np.stack(planes, axis=-1), 0.0, 1.0)
    return np.round(pixels * 255.0).astype(np.uint8)


FAKE_STEMS = {
    "bsd68": ("test001", "test002", "test003"),
    "set12": ("01", "02", "03"),
    "cbsd68": ("101085", "101087", "103070"),
    "kodak": ("kodim01", "kodim02", "kodim03"),
}


def fake(name: str, root: str | Path, *, n: int = 3, size: int = 64) -> Path:
    """Write ``n`` small synthetic PNGs named like the release's first files, plus the
    FAKE_DATASET.txt marker that makes every result on them say synthetic_data=True."""
    from PIL import Image

    info = set_info(name)
    if info.photographs:
        raise DatasetError(f"{name} is built from bundled photographs and is always available: nothing to fake")
    target = set_dir(name, root)
    target.mkdir(parents=True, exist_ok=True)
    stems = list(FAKE_STEMS[name][:n]) + [f"fake{i:03d}" for i in range(len(FAKE_STEMS[name]), n)]
    for i, stem in enumerate(stems):
        pixels = fake_image(i + 1000 * list(SETS).index(name), size, info.channels)
        Image.fromarray(pixels[:, :, 0] if info.channels == 1 else pixels).save(target / f"{stem}.png")
    (target / FAKE_MARKER).write_text(FAKE_TEXT.format(title=info.title))
    return target


# --------------------------------------------------------------------------------------------
# The sets on the datasets protocol (runner/datasets/base.py), as the registry lists them.
# --------------------------------------------------------------------------------------------
class DenoiseDataset(Dataset):
    """One denoising set under the data root (``<root>/denoise/<set>/``), or bundled with
    scikit-image (no folder). ``name`` is the catalogue's dataset id, ``denoise/<set>``; the set's
    own name is an alias."""

    def __init__(self, info: SetInfo):
        self.info = info
        self.name = f"denoise/{info.name}"
        self.title = info.title
        self.aliases = (info.name,)
        self.folder = "" if info.photographs else self.name
        self.bundled_with = "scikit-image" if info.photographs else ""

    def present(self, root: Path | str) -> bool:
        if self.info.photographs:
            return importlib.util.find_spec("skimage") is not None
        folder = set_dir(self.info.name, root)
        return folder.is_dir() and any(folder.glob("*.png"))

    def synthetic(self, root: Path | str) -> bool:
        return not self.info.photographs and super().synthetic(root)

    def verify(self, root: Path | str, *, deep: bool = False) -> VerifyReport:
        """The set's check (:func:`verify`) as every dataset reports it: a missing set is an error,
        a count or checksum that differs a warning; ``deep`` changes nothing (every file is hashed)."""
        found = verify(self.info.name, root)
        report = VerifyReport(self.name, synthetic=bool(found["synthetic"]))
        if not found["present"]:
            report.error(f"{found['path']} has no images; run `runner data prepare {self.name}`")
        report.warnings.extend(found["warnings"])
        report.counts["files"] = int(found["files"])
        report.expected["files"] = int(found["expected_files"])
        if found["sha256"]:
            report.checksums["sha256"] = str(found["sha256"])
        report.notes.append(f"checksums: {found['checksums']}")
        return report

    def prepare(self, root: Path | str, progress: Progress | None = None) -> VerifyReport:
        """Download and verify (:func:`prepare`). Raises DownloadFailed when the download fails."""
        try:
            prepare(self.info.name, root)
        except DatasetError as exc:
            raise DownloadFailed(str(exc)) from exc
        return self.verify(root)

    def fake(self, root: Path | str, *, n_per_class: int = 3, seed: int = 0, **options: Any) -> Path:
        """Write ``n_per_class`` small synthetic images (a set has no classes: that many images).
        Raises ValueError for a bundled set (there is nothing to fake). ``seed`` is unused: the
        pictures are the same every time."""
        try:
            return fake(self.info.name, root, n=n_per_class, **options)
        except DatasetError as exc:
            raise ValueError(str(exc)) from exc

    def open(self, root: Path | str, **params: Any) -> DenoiseSet:
        """The set's reader (:func:`open_set`; ``stems`` picks a subset). Raises DatasetError."""
        return open_set(self.info.name, root, stems=params.get("stems"))


DENOISE_DATASETS = tuple(DenoiseDataset(info) for info in SETS.values())
