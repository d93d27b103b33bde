"""What a model server is started with: its settings (the key of a warm server) and the defaults
the environment sets (memory, threads, lifetime, idle time).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from runner.host_limits import host_memory_bytes
from runner.sandbox import GiB
from runner.sandboxed import model_server


def env_float(name: str, default: float) -> float:
    """The float in environment variable ``name``, or ``default`` when unset, empty or not a number."""
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def default_memory_bytes() -> int:
    """The model server's memory limit in bytes: ``RUNNER_MODEL_MEMORY_GB`` where set, else half the
    host's memory (/proc/meminfo), and at least 6 GiB since torch needs 4 GiB of address space just
    to import."""
    configured = env_float("RUNNER_MODEL_MEMORY_GB", 0)
    if configured > 0:
        return int(configured * GiB)
    return max(6 * GiB, host_memory_bytes() // 2)


def default_threads(device: str) -> int:
    """CPU threads of the model server: RUNNER_CPU_THREADS, else the cores (at most 16) on CPU, 4
    beside a GPU (onnxruntime and host work)."""
    configured = os.environ.get("RUNNER_CPU_THREADS")
    if configured and configured.isdigit() and int(configured) > 0:
        return int(configured)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 16)) if not device.startswith("cuda") else min(4, max(1, cores))


@dataclass(frozen=True)
class ServerSettings:
    """What a server is started with; two jobs share a warm server only when these agree."""

    sha256: str
    fmt: str
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: str = "auto"
    trust: bool = False
    threads: int = 0
    # A safetensors artifact's architecture: runner.architectures.ArchitectureSpec.to_json(), "" otherwise.
    architecture: str = ""

    def __post_init__(self) -> None:
        if self.precision not in model_server.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(model_server.PRECISIONS)}")
        if self.channels_last not in model_server.CHANNELS_LAST:
            raise ValueError("channels_last must be auto, on or off")
