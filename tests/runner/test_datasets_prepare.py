"""``prepare``'s download path, served from memory instead of the network: streaming, checksum,
resume, failures an operator can act on, and safe extraction."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import urllib.error

import pytest

from runner.datasets import DATASETS, DownloadFailed, download
from runner.datasets.cifar import CIFAR10, CifarDataset
from runner.spec import ErrorKind


class Served(io.BytesIO):
    """A urlopen response: honours a Range header; ``cut_at`` drops the connection there."""

    def __init__(self, data: bytes, *, start: int = 0, cut_at: int | None = None):
        super().__init__(data[start:])
        self.status = 206 if start else 200
        self.headers = {"Content-Length": str(len(data) - start)}
        self.cut_at = None if cut_at is None else cut_at - start

    def read(self, size: int = -1) -> bytes:
        if self.cut_at is not None and self.tell() >= self.cut_at:
            raise ConnectionResetError("connection reset by peer")
        if self.cut_at is not None:
            size = min(size if size > 0 else self.cut_at, self.cut_at - self.tell())
        return super().read(size)


class Server:
    def __init__(self, data: bytes, *, cut_first_at: int | None = None, error: Exception | None = None):
        self.data, self.cut_first_at, self.error = data, cut_first_at, error
        self.requests: list[str | None] = []

    def __call__(self, request, timeout):
        self.requests.append(request.get_header("Range"))
        if self.error is not None:
            raise self.error
        start = int(request.get_header("Range")[len("bytes=") : -1]) if request.get_header("Range") else 0
        cut = self.cut_first_at if len(self.requests) == 1 else None
        return Served(self.data, start=start, cut_at=cut)


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


@pytest.fixture
def cifar_archive(tmp_path_factory) -> bytes:
    """cifar-10-python.tar.gz holding a fake CIFAR-10 (marker included), as the release packs it."""
    folder = tmp_path_factory.mktemp("packing")
    DATASETS["cifar-10-batches-py"].fake(folder, n_per_class=1, seed=4)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        tf.add(folder / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buffer.getvalue()


def test_prepare_streams_checks_and_unpacks_the_release_archive(tmp_path, monkeypatch, cifar_archive):
    server = Server(cifar_archive)
    monkeypatch.setattr(download, "_urlopen", server)
    md5 = hashlib.md5(cifar_archive).hexdigest()
    release = dataclasses.replace(CIFAR10, archive=dataclasses.replace(CIFAR10.archive, md5=md5))
    dataset = CifarDataset(release, title="CIFAR-10", aliases=())
    seen = []
    report = dataset.prepare(tmp_path, lambda fraction, message: seen.append(fraction))
    assert report.ok and report.synthetic  # the served copy carries the fake marker
    assert dataset.present(tmp_path)
    assert seen and seen[-1] == 1.0
    assert (tmp_path / ".downloads" / "cifar-10-python.tar.gz").is_file()
    assert dataset.open(tmp_path).size == 10


def test_a_download_whose_checksum_differs_from_the_release_is_deleted_and_refused(
    tmp_path, monkeypatch, cifar_archive
):
    monkeypatch.setattr(download, "_urlopen", Server(cifar_archive))
    with pytest.raises(DownloadFailed) as caught:
        DATASETS["cifar-10-batches-py"].prepare(tmp_path)
    assert caught.value.kind == ErrorKind.DOWNLOAD_FAILED
    assert "c58f30108f718f92721af3b95e74349a" in caught.value.message
    assert list((tmp_path / ".downloads").iterdir()) == []
    assert not DATASETS["cifar-10-batches-py"].present(tmp_path)


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path, monkeypatch, no_backoff):
    data = bytes(range(256)) * 4096  # 1 MiB
    archive = download.Archive("https://example.org/data.tar", "data.tar", md5=hashlib.md5(data).hexdigest())
    server = Server(data, cut_first_at=300_000)
    monkeypatch.setattr(download, "_urlopen", server)
    with pytest.raises(DownloadFailed, match="kept"):
        download.fetch(archive, tmp_path, retries=1)
    assert (tmp_path / "data.tar.part").stat().st_size == 300_000
    path = download.fetch(archive, tmp_path, retries=1)
    assert path.read_bytes() == data
    assert server.requests == [None, "bytes=300000-"]


def test_an_unreachable_server_fails_the_download_after_its_retries(tmp_path, monkeypatch, no_backoff):
    server = Server(b"", error=urllib.error.URLError("Name or service not known"))
    monkeypatch.setattr(download, "_urlopen", server)
    archive = download.Archive("https://example.org/x.tar", "x.tar", md5="0" * 32)
    with pytest.raises(DownloadFailed, match="3 tries.*Name or service not known"):
        download.fetch(archive, tmp_path)
    assert len(server.requests) == 3


def test_a_file_the_server_does_not_have_fails_at_once(tmp_path, monkeypatch, no_backoff):
    missing = urllib.error.HTTPError("https://example.org/x.tar", 404, "Not Found", {}, None)
    server = Server(b"", error=missing)
    monkeypatch.setattr(download, "_urlopen", server)
    with pytest.raises(DownloadFailed, match="HTTP 404"):
        download.fetch(download.Archive("https://example.org/x.tar", "x.tar"), tmp_path)
    assert len(server.requests) == 1


def test_an_archive_member_that_would_land_outside_the_data_root_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DownloadFailed, match="refused"):
        download.extract(archive, tmp_path / "root")
    assert not (tmp_path / "outside.txt").exists()


def test_every_downloadable_dataset_names_an_official_url_and_checksum():
    for name in (
        "cifar-10-batches-py",
        "cifar-100-python",
        "CIFAR-10-C",
        "CIFAR-100-C",
        "imagenet-a",
        "imagenet-r",
    ):
        dataset = DATASETS[name]
        archive = dataset.release.archive if hasattr(dataset, "release") else dataset.archive
        assert archive.url.startswith("https://") and len(archive.md5) == 32, name
    assert DATASETS["imagenet/val"].needs_manual_download and DATASETS["dollarstreet"].needs_manual_download
