"""The programs that run inside the sandbox, named for what they run, and what they share.

- ``model_server.py``: loads one submitted model (TorchScript, torch.export, ONNX, or a library
  architecture with .safetensors weights, built by ``library_models.py``) and answers
  batches from the runner (runner/serve/) over a socket and shared memory: the classifier and
  denoiser tracks.
- ``optimizer_server.py``: builds a submitted optimizer and answers each step the runner asks for
  (runner/opt_server.py) over a socket and shared memory: the optimizer track, on the synthetic
  functions and on the training tasks on the CPU.
- ``training.py``: trains the platform's model with a submitted optimizer, the whole loop in the
  sandbox: the training tasks on CUDA (runner/tracks/train.py). The runner's own loop on the CPU
  (runner/tracks/training/loop.py) reuses its harness.
- ``optimizer_loader.py``: loads a submitted optimizer file (compile, execute, make_optimizer),
  for ``optimizer_server.py`` and ``training.py``.
- ``library_models.py``: builds a library architecture (torchvision, timm) and loads submitted
  .safetensors weights into it, checked name by name, for ``model_server.py``.
- ``saliency_server.py``: the model server's saliency request (issue 17 item 5), with
  runner/saliency.py (the methods; torch) and runner/saliency_maps.py (occlusion and the
  maps' transport; numpy) bound beside it.
- ``rules.py``: the error kinds a program may report, what counts as out of memory, the frame
  format; imported by the runner too.

Each program is bound into the sandbox alone with the modules of this package it imports
(:data:`BESIDE`), copied by :func:`stage`: the standard library, numpy and torch (and onnxruntime,
safetensors, torchvision and timm where named) besides, never another runner module. A program imports its companions as
top-level modules when it runs in the sandbox and as ``runner.sandboxed.*`` when the runner imports
it (for a model definition or a protocol constant).
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
# What each program imports from beside it: copied with it into the sandbox's input folder.
BESIDE = {
    "model_server.py": (
        "library_models.py",
        "rules.py",
        "saliency_server.py",
        "saliency.py",
        "saliency_maps.py",
    ),
    "optimizer_server.py": ("optimizer_loader.py", "rules.py"),
    "training.py": ("optimizer_loader.py", "rules.py"),
}
# Modules of the runner package (not this one) a program imports from beside it: pure numpy and
# torch, importing no other runner module.
FROM_RUNNER = {name: HERE.parent / name for name in ("saliency.py", "saliency_maps.py")}


def stage(program: str, folder: Path | str) -> Path:
    """Copy ``program`` (a file name of :data:`BESIDE`, e.g. ``"model_server.py"``) and the modules
    it imports from beside it into ``folder``, readable by the sandbox's user (0644); returns the
    program's path there, to run as ``python -I <path> ...``. Raises KeyError for another name
    and OSError when a file cannot be written."""
    folder = Path(folder)
    for name in (program, *BESIDE[program]):
        target = folder / name
        shutil.copyfile(FROM_RUNNER.get(name, HERE / name), target)
        target.chmod(0o644)
    return folder / program
