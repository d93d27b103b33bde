"""The most memory and disk a submission can take: a hoarding program run through the real sandbox
fills each place it can keep bytes until the kernel refuses, and reports what it held.

    .venv/bin/python tests/bench/bench_sandbox_limits.py [--memory-gib 8] [--scratch-gib 4] [--together]

Places: anonymous memory (64 MiB blocks, touched, until MemoryError), /dev/shm, /tmp and scratch
(1 MiB writes into files of at most the file-size limit, until ENOSPC), memfds, and a
posix_fallocate of files of the file-size limit in scratch until refused (how much, the errno, how
long it took). By default each place is
filled and freed in turn, so the host never holds more than one at once; ``--together`` keeps
everything until the end (use small limits on a shared host). Prints one line per place, the sum,
and the host's cgroup mode (v2 accounting or the fallback).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from runner.host_limits import cgroup_parent, host_memory_bytes, unmount_under
from runner.sandbox import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_SHM_BYTES, run_sandboxed

GiB, MiB = 1 << 30, 1 << 20

HOARDER = r'''
import errno, json, mmap, os, sys, time
together = sys.argv[1] == "1"
held, report = [], {}

def fill_files(folder, prefix):
    total, files = 0, []
    try:
        for i in range(100000):
            fh = open(os.path.join(folder, f"{prefix}-{i}"), "wb")
            files.append(fh)
            try:
                while True:
                    fh.write(b"x" * (1 << 20)); fh.flush(); total += 1 << 20
            except OSError as exc:
                if exc.errno != errno.EFBIG:
                    return total, errno.errorcode[exc.errno]
    finally:
        held.append(files)
    return total, "files"

def anonymous():
    blocks, total = [], 0
    try:
        while True:
            block = bytearray(64 << 20)
            block[::4096] = b"x" * len(block[::4096])
            blocks.append(block); total += len(block)
    except MemoryError:
        held.append(blocks)
        return total, "MemoryError"

def memfds():
    try:
        fd = os.memfd_create("hoard")
    except OSError as exc:
        return 0, errno.errorcode[exc.errno]
    total = 0
    try:
        while True:
            os.write(fd, b"x" * (1 << 20)); total += 1 << 20
    except OSError as exc:
        return total, errno.errorcode[exc.errno]

def fallocate(size):
    # Files of ``size`` bytes (the file-size limit) allocated without writing, until refused.
    start, total, names = time.monotonic(), 0, []
    try:
        for i in range(10000):
            names.append(f"fallocated-{i}")
            fd = os.open(names[-1], os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
                total += size
            finally:
                os.close(fd)
        outcome = "allocated"
    except OSError as exc:
        outcome = errno.errorcode[exc.errno]
    seconds = time.monotonic() - start
    for name in names:
        os.unlink(name)
    return total, outcome, seconds

def free():
    if not together:
        for item in held:
            if isinstance(item, list) and item and hasattr(item[0], "close"):
                for fh in item:
                    fh.close(); os.unlink(fh.name)
        held.clear()

for name, fill in (("anonymous memory", anonymous), ("/dev/shm", lambda: fill_files("/dev/shm", "shm")),
                   ("/tmp", lambda: fill_files("/tmp", "tmp")), ("scratch", lambda: fill_files(".", "scratch")),
                   ("memfd (one, under the file-size limit)", memfds)):
    report[name] = fill()
    free()
report["fallocate in scratch"] = fallocate(int(sys.argv[2]))
print(json.dumps(report), flush=True)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-gib", type=float, default=8.0, help="the address-space limit (runner default 8)")
    parser.add_argument("--scratch-gib", type=float, default=4.0, help="the scratch size (runner default 4)")
    parser.add_argument("--file-gib", type=float, default=DEFAULT_MAX_FILE_BYTES / GiB,
                        help="the file-size limit, also /tmp's size (runner default 1)")
    parser.add_argument("--shm-mib", type=float, default=DEFAULT_MAX_SHM_BYTES / MiB, help="/dev/shm's size")
    parser.add_argument("--together", action="store_true", help="hold every place at once until the end")
    args = parser.parse_args()
    scratch_bytes = int(args.scratch_gib * GiB)
    with tempfile.TemporaryDirectory(prefix="runner-job-bench-limits-") as tmp:
        try:
            result = run_sandboxed([sys.executable, "-I", "-c", HOARDER, "1" if args.together else "0",
                                    str(int(args.file_gib * GiB))], scratch=Path(tmp) / "scratch", time_limit_s=600,
                                   memory_bytes=int(args.memory_gib * GiB), max_file_bytes=int(args.file_gib * GiB),
                                   max_scratch_bytes=scratch_bytes, max_shm_bytes=int(args.shm_mib * MiB))
        finally:
            unmount_under(tmp)
    if not result.ok:
        sys.exit(f"the hoarder failed: {result.failure()}\n{result.log_tail[-2000:]}")
    report = json.loads(result.stdout_tail.strip().splitlines()[-1])
    print(f"host: {host_memory_bytes() / GiB:.1f} GiB, memory accounting: "
          f"{'cgroup v2 at ' + str(cgroup_parent()) if cgroup_parent() else 'fallback (no cgroup v2)'}")
    print(f"limits: address space {args.memory_gib} GiB, scratch {args.scratch_gib} GiB, "
          f"/tmp and file size {args.file_gib} GiB, /dev/shm {args.shm_mib:.0f} MiB")
    total = 0
    fallocated, refusal, seconds = report.pop("fallocate in scratch")
    for place, (amount, how) in report.items():
        total += amount
        print(f"{place:42s} {amount / GiB:7.2f} GiB  stopped by {how}")
    print(f"{'sum of the places':42s} {total / GiB:7.2f} GiB")
    print(f"{'fallocate in scratch (files of the limit)':42s} {fallocated / GiB:7.2f} GiB  stopped by {refusal} "
          f"after {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
