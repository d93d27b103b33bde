"""What the per-image outcomes cost a classifier evaluation (issue 17: at most 5% more time), as a
figure that a loaded host does not blur: the CPU time of this thread per batch of logits, best of
``--repeats``, for the per-image outcomes (runner.metrics.per_image.PartOutcomes.add) and, to
compare, for the top-5 the track computed before them (runner.metrics.classification.compact);
then the time to write a file of ``--images`` outcomes (runner.per_image_file.write_per_image).

    .venv/bin/python tests/bench/bench_per_image.py [--repeats 200] [--images 450]

Divide the per-batch figure by the evaluation's time a batch (``runner bench``'s pure forward rate
gives its floor) and the write by ``timing.eval_s`` of `runner run` to get the overhead;
docs/benchmarks.md records both.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from runner.metrics.classification import compact
from runner.metrics.per_image import PartOutcomes
from runner.per_image_file import write_per_image

SHAPES = (("digits", 256, 10), ("cifar100", 256, 100), ("imagenet-val", 32, 1000), ("imagenet-val", 256, 1000))


def best_thread_time(call: Callable[[], object], repeats: int) -> float:
    """The least CPU time of this thread one call took, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        call()
        times.append(time.thread_time() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--images", type=int, default=450)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| logits per batch | per-image outcomes | top-5 (compact) |")
    print("| --- | --- | --- |")
    for slug, n, classes in SHAPES:
        logits = rng.normal(size=(n, classes)).astype(np.float32)
        collect = PartOutcomes(slug, SimpleNamespace(labels=rng.integers(0, classes, n), accepted=None), n)
        positions = np.arange(n)
        outcomes_s = best_thread_time(partial(collect.add, positions, logits), args.repeats)
        top5_s = best_thread_time(partial(compact, slug, logits, n), args.repeats)
        print(f"| {n} × {classes} ({slug}) | {outcomes_s * 1e3:.3f} ms | {top5_s * 1e3:.3f} ms |")
    m = args.images
    arrays = {"index": np.arange(m), "label": rng.integers(0, 10, m), "pred": rng.integers(0, 10, m),
              "top5_hit": np.ones(m, bool), "loss": rng.random(m), "el2n": rng.random(m)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "R.per_image.npz"
        write_s = best_thread_time(partial(write_per_image, path, arrays), max(3, args.repeats // 20))
    print(f"writing {m} images' outcomes: {write_s * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
