"""CPython's ``pydoc_data/topics.py`` as a byte stream: real English text (the language reference's
help topics) that ships with every CPython, for the transformer workload ``opt-text-transformer``
(shared/PROTOCOLS.md, "Small transformer on 2 CPU cores").

The text is the ``topics`` values joined in sorted key order with nothing between them, encoded
as UTF-8; tokens are its bytes (vocabulary 256). The split is contiguous: the first 90 % of the
bytes (⌊9n / 10⌋) train, the rest validate. The text changes between CPython versions: the
catalogue pins the sha256 of Python 3.11.7's text (79 topics, 464,970 characters, 466,117 bytes);
another hash is a warning in the result's ``env``, never an error, and results compare only
within one hash (``env.text_sha256``).
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from runner.datasets.base import Batch, Dataset, Reader, Targets, VerifyReport
from runner.progress import Progress

TOPICS_SHA256 = "37d06970fc926e60c16dff401e441b84752446a36b6b64516c229fdec77e992c"  # Python 3.11.7
TOPICS_COUNT = 79
TOPICS_BYTES = 466_117
TOPICS_PYTHON = "3.11.7"
SPLITS = ("train", "val")


def topics_text() -> tuple[bytes, int]:
    """(the UTF-8 bytes of ``pydoc_data.topics.topics``' values joined in sorted key order, the
    number of topics), from this interpreter's standard library."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics)).encode("utf-8"), len(topics)


def split_point(size: int) -> int:
    """Where validation starts in a text of ``size`` bytes: ⌊9 · size / 10⌋ (466,117 → 419,505)."""
    return 9 * size // 10


def text_split(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) as uint8 arrays: the first 90 % of ``data`` and the rest, contiguous."""
    array = np.frombuffer(data, dtype=np.uint8)
    cut = split_point(len(array))
    return array[:cut].copy(), array[cut:].copy()


class ByteReader(Reader):
    """One split of the text: ``data`` (uint8 [n], the bytes in order) and ``env``. ``batches``
    yields non-overlapping windows of ``context`` bytes from the start (the tail shorter than a
    window is left out): ``inputs`` int64 [b, context], ``index`` the windows' byte offsets."""

    def __init__(self, name: str, data: np.ndarray, env: dict[str, Any], *, context: int = 128):
        self.name, self.data, self.env, self.context = name, data, env, context
        self.size = len(data)
        self.targets = Targets()  # the targets are the next bytes of ``data``

    def batches(self, batch_size: int = 256, *, workers: int = 0, device: str = "cpu") -> Iterator[Batch]:
        starts = np.arange(0, self.size - self.context + 1, self.context)
        for first in range(0, len(starts), batch_size):
            index = starts[first:first + batch_size]
            windows = np.stack([self.data[s:s + self.context] for s in index]).astype(np.int64)
            yield Batch(windows, index, [str(int(s)) for s in index])


class PydocTopicsDataset(Dataset):
    """The text, from the standard library of the Python that runs the runner: always present."""

    name = "pydoc-topics"
    folder = ""
    title = "CPython pydoc_data topics (bytes)"
    aliases = ("pydoc_data", "pydoc-data", "pydoc-topics")
    bundled_with = "CPython (pydoc_data, standard library)"

    def present(self, root: Path | str | None = None) -> bool:
        return True

    def verify(self, root: Path | str | None = None, *, deep: bool = False) -> VerifyReport:
        """Counts (topics, bytes) and the sha256, each against Python 3.11.7's as a warning."""
        data, topics = topics_text()
        report = VerifyReport(self.name)
        report.count("topics", topics, TOPICS_COUNT)
        report.count("bytes", len(data), TOPICS_BYTES)
        digest = hashlib.sha256(data).hexdigest()
        report.checksums["text"] = "sha256:" + digest
        if digest != TOPICS_SHA256:
            report.warnings.append(
                f"the text of Python {platform.python_version()} has sha256 {digest}, not Python {TOPICS_PYTHON}'s "
                f"{TOPICS_SHA256} that the task pins: results compare only within one text (env.text_sha256)")
        report.info = {"text_sha256": digest, "text_sha256_pinned": TOPICS_SHA256,
                       "python": platform.python_version()}
        return report

    def prepare(self, root: Path | str | None = None, progress: Progress | None = None) -> VerifyReport:
        return self.verify(root)  # ships inside CPython: nothing to download

    def fake(self, root: Path | str | None = None, *, n_per_class: int = 2, seed: int = 0, **_: Any) -> Path:
        raise ValueError("pydoc-topics is real text from CPython's standard library: there is no fake copy to write")

    def synthetic(self, root: Path | str | None = None) -> bool:
        return False

    def open(self, root: Path | str | None = None, *, split: str = "train", context: int = 128,
             **_: Any) -> ByteReader:
        """The ``split`` ("train" or "val") as a :class:`ByteReader`; raises ValueError for another."""
        if split not in SPLITS:
            raise ValueError(f"pydoc-topics has the splits {', '.join(SPLITS)}, not {split!r}")
        data, _topics = topics_text()
        report = self.verify(root)
        train, val = text_split(data)
        env = {"dataset": self.name, **report.to_env(), "split": split,
               "split_method": "contiguous: the first ⌊9n/10⌋ bytes train, the rest val",
               "split_bytes": {"train": len(train), "val": len(val)},
               "text": "pydoc_data.topics.topics values joined in sorted key order, UTF-8 bytes"}
        return ByteReader(self.name, train if split == "train" else val, env, context=context)
