"""What a classifier costs to run, for the weighted rankings (issue 19 item 4; docs/scoring.md):
its parameter count and the sandboxed model server's peak memory, as the server reported them
(runner/sandboxed/model_server.py: ``parameters`` and ``device_memory_bytes`` in its ready frame,
``peak_rss_bytes`` and ``peak_cuda_bytes`` with every batch's output). An ONNX graph's parameters
are counted here from the file's initializers (the onnx package is not in the sandbox; parsing
the protobuf runs nothing of the submission's). Throughput is the result's
``timing.items_per_s``, measured here.

The server runs the submitted model, so these figures are what it said: a hostile model could
misreport its own size or memory. The result's ``env.memory.source`` says how they were taken.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

RSS_SOURCE = ("ru_maxrss of the sandboxed model server process: the whole process (Python, torch and the model), "
              "peak over the server's life so far, so a warm server's earlier jobs of the same model count")
CUDA_SOURCE = ("torch.cuda.max_memory_allocated in the sandboxed model server: tensors only (not the CUDA "
               "context nor the caching allocator's reserve), peak over the server's life so far")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def onnx_parameters(path: Path) -> int | None:
    """Elements of an ONNX graph's initializers (its weights), external data not read; None when
    the file does not parse (the model server has then refused it already)."""
    import onnx

    try:
        graph = onnx.load_model(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - a damaged file: the count is simply unknown
        return None
    total = 0
    for tensor in graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= int(dim)
        total += count
    return total


def footprint(info: dict[str, Any], device: str, memory_limit_bytes: int | None, *,
              fmt: str = "", artifact: Path | None = None) -> dict[str, Any]:
    """The part of a classifier result's ``env`` about its footprint, from the model server's
    ``info`` taken right after the evaluation: ``parameters`` (elements, or None where the format
    does not say; ``fmt`` "onnx" with ``artifact``: counted from the file) and ``memory`` (``peak_bytes``, ``limit_bytes``: what the server could use,
    ``source``: how the peak was measured), or ``memory`` None when the server reported no peak.
    On a GPU the peak is the device's tensors and the limit the device's memory; on the CPU the
    process's resident set and the sandbox's memory limit ``memory_limit_bytes``."""
    on_gpu = str(info.get("device") or device).startswith("cuda")
    peak = _count(info.get("peak_cuda_bytes")) if on_gpu else _count(info.get("peak_rss_bytes"))
    limit = _count(info.get("device_memory_bytes")) if on_gpu else _count(memory_limit_bytes)
    memory = {"peak_bytes": peak, "limit_bytes": limit, "source": CUDA_SOURCE if on_gpu else RSS_SOURCE,
              "reported_by": "the model server (it runs the submission: not forgery-proof)"} if peak else None
    parameters = onnx_parameters(artifact) if fmt == "onnx" and artifact is not None else info.get("parameters")
    return {"parameters": _count(parameters), "memory": memory}
