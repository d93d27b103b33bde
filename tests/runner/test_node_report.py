"""What a runner tells the site about itself on every node heartbeat and claim: its pools, its
device and the datasets it holds, each marked real or synthetic, with a checksum once known."""
from __future__ import annotations

from runner import data_admin
from runner.spec import validate_node_report
from runner.worker import NodeHeartbeat, WorkerSettings, describe_device

from .fakesite import TOKEN


def node(site, data_root, device: str = "cpu") -> NodeHeartbeat:
    return NodeHeartbeat(WorkerSettings(server=site.url, token=TOKEN, pools=["cpu", "gpu"], data_root=data_root,
                                        device=device))


def test_the_node_heartbeat_carries_pools_device_and_each_dataset_real_or_synthetic(site, client, tmp_path):
    data_admin.fake("cifar-10-batches-py", tmp_path)
    beat = node(site, tmp_path)
    beat.beat_once(client)
    report = site.node_heartbeats[-1]
    assert report["pools"] == ["cpu", "gpu"] and report["device"] == "cpu"
    held = {d["name"]: d for d in report["datasets"]}
    assert held["cifar-10-batches-py"]["synthetic"] is True  # the fake copy is never passed off as real
    assert held["sklearn-digits"]["synthetic"] is False  # real data bundled with scikit-learn
    assert held["denoise/skimage-gray"]["synthetic"] is False  # bundled photographs need no data root
    assert "imagenet-c" not in held and "CIFAR-10-C" not in held
    assert validate_node_report(report)["datasets"] == report["datasets"]  # the site accepts it as sent


def test_checksums_reach_the_site_with_the_beat_after_they_are_worked_out(site, client, tmp_path):
    data_admin.fake("cifar-10-batches-py", tmp_path)
    beat = node(site, tmp_path)
    held = beat.beat_once(client)
    assert all(d["checksum"] is None for d in held)  # the first beat does not wait for any listing
    while beat.fill_one_checksum(held):
        pass
    beat.beat_once(client)
    held = {d["name"]: d for d in site.node_heartbeats[-1]["datasets"]}
    assert held["cifar-10-batches-py"]["checksum"].startswith("checksums-sha256:")
    assert held["sklearn-digits"]["checksum"].startswith("sha256:")
    again = node(site, tmp_path)
    while again.fill_one_checksum(held.values()):
        pass
    assert again.report() == site.node_heartbeats[-1]["datasets"]  # same files, same checksums


def test_a_cuda_device_is_described_by_its_name_or_as_unavailable():
    import torch

    assert describe_device("cpu") == "cpu"
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(CUDA unavailable)"
    assert describe_device("cuda:0") == f"cuda:0 {expected}"


def test_a_claim_names_every_dataset_held_and_a_refused_claim_leaves_the_job_alone(site, client, tmp_path):
    from runner.worker import process_job

    from . import sources

    job = site.add_job(5, "opt-f1", sources.SGD)
    job.claim_status = 409  # as the site answers a runner without the task's data
    assert process_job(5, client, data_root=tmp_path, pools=["cpu"]) == "not_claimed"
    claimed = site.claims[-1]
    assert claimed["pools"] == ["cpu"]
    assert {"sklearn-digits", "denoise/skimage-gray", "denoise/skimage-color"} <= set(claimed["datasets"])
    assert not job.failures and not job.results
