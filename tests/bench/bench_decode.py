"""Image decoding throughput: the runner's thread pool (runner.datasets.images.BatchDecoder) against
the process pool it replaced, on fake ImageNet JPEGs (`runner data fake`'s writers).

    .venv/bin/python tests/bench/bench_decode.py [--workers 2] [--per-class 16] [--repeats 3]

Prints images per second for each way and the ratio threads ÷ processes per set, with the pool's
start-up counted (as in a job, which starts one per reader) and without it: ImageNet val
(assorted sizes, resize 256 + centre crop 224) and ImageNet-C (224×224, centre crop only). The
process pool is rebuilt here as the runner had it (spawn context, a batch per task, the same
read-ahead), only to compare: the runner itself never starts processes to decode, because
`runner work` evaluates inside a daemonic Celery child that may not have any.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from runner.datasets import DATASETS
from runner.datasets.images import BatchDecoder, decode_batch, to_model_input

BATCH = 32


def process_pool(paths: list[list[str]], mode: str, workers: int, prefetch: int = 2, warm=None):
    """The replaced decoder: spawned worker processes, ``workers * prefetch`` batches ahead (in
    ``warm``, an already started pool, to leave the start-up out)."""
    source = iter(paths)
    pending: deque = deque()
    with contextlib.nullcontext(warm) if warm else ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for batch in source:
            pending.append(pool.submit(decode_batch, batch, mode))
            if len(pending) >= workers * prefetch:
                break
        while pending:
            done = pending.popleft()
            following = next(source, None)
            if following is not None:
                pending.append(pool.submit(decode_batch, following, mode))
            yield to_model_input(done.result())


def batches_of(folder: Path) -> list[list[str]]:
    files = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    return [files[i : i + BATCH] for i in range(0, len(files), BATCH)]


def best_rates(ways: dict, images: int, repeats: int) -> dict[str, float]:
    """Images per second of each way, best of ``repeats``, the ways taking turns so that a change
    in the machine's load hits them alike (pool start-up included where the way starts one)."""
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(repeats):
        for name, run in ways.items():
            started = time.perf_counter()
            for _batch in run():
                pass
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: images / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--per-class", type=int, default=16, help="fake val images per class")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        root = Path(tmp)
        DATASETS["imagenet/val"].fake(root, n_per_class=args.per_class)
        DATASETS["imagenet-c"].fake(root, classes=3, extras=False)
        sets = (("imagenet-val", root / "imagenet" / "val", "resize256-centercrop224"),
                ("imagenet-c", root / "imagenet-c", "centercrop224"))
        print(f"{args.workers} workers, batches of {BATCH}, best of {args.repeats}")
        for name, folder, mode in sets:
            paths = batches_of(folder)
            images = sum(len(p) for p in paths)
            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as warm:
                list(warm.map(abs, range(4 * args.workers)))  # every worker started and importing done
                rate = best_rates({
                    "serial": lambda p=paths, m=mode: BatchDecoder(m).map(p),
                    "threads": lambda p=paths, m=mode: BatchDecoder(m, workers=args.workers).map(p),
                    "processes": lambda p=paths, m=mode: process_pool(p, m, args.workers),
                    "started": lambda p=paths, m=mode, w=warm: process_pool(p, m, args.workers, warm=w),
                }, images, args.repeats)
            print(f"{name:13s} {images:4d} images  serial {rate['serial']:6.1f}/s  threads {rate['threads']:6.1f}/s  "
                  f"processes {rate['processes']:6.1f}/s (already started: {rate['started']:6.1f}/s)  threads ÷ "
                  f"processes {rate['threads'] / rate['processes']:.2f} ({rate['threads'] / rate['started']:.2f})")

if __name__ == "__main__":
    main()
