"""The libraries' published weights, for a safetensors submission with ``"pretrained": true``:
fetched by the trusted runner (the sandbox has no network) and staged read-only beside the model
server, which loads them before the submitted tensors (runner/sandboxed/library_models.py).

- torchvision: the architecture's ``DEFAULT`` weights (``get_model_weights(name).DEFAULT.url``),
  kept where ``torch.hub`` keeps them, ``$TORCH_HOME/hub/checkpoints/<file>`` (default
  ``~/.cache/torch``); downloaded when absent, checked against the sha256 prefix in the file's
  name (``resnet18-f37072fd.pth``). A weights-only pickle: the sandbox loads it with
  ``torch.load(weights_only=True)``.
- timm: the default pretrained tag's ``model.safetensors`` on the Hugging Face hub
  (``hf_hub_download``), kept in the hub's cache, ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default
  ``~/.cache/huggingface/hub``), read first without a request; with ``HF_HUB_OFFLINE=1`` only
  the cache is read.

A node without a network serves ``pretrained`` only from files already in those caches (an
operator may copy them there). Errors: EvaluationError BAD_HPARAMS when the library publishes no
weights for the architecture (the submitter's choice), DOWNLOAD_FAILED when this node cannot get
them (the platform's: the job goes to another runner).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from runner.spec import ErrorKind, EvaluationError

log = logging.getLogger(__name__)
# torch.hub's convention: the file name ends in -<first hex digits of its sha256>.
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def published_weights(architecture: str) -> Path:
    """The local file of ``architecture``'s (``"torchvision:<name>"`` or ``"timm:<name>"``, already
    checked against the allow-list) published weights, fetched when not cached. Raises
    EvaluationError (see the module docstring)."""
    library, name = architecture.split(":", 1)
    if library == "torchvision":
        return _torchvision(name)
    if library == "timm":
        return _timm(name)
    raise EvaluationError(ErrorKind.BAD_HPARAMS, f"unknown library {library!r}")


def _torchvision(name: str) -> Path:
    import torch
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError) as exc:
        raise EvaluationError(ErrorKind.BAD_HPARAMS, f"torchvision publishes no weights for {name!r}") from exc
    url = weights.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    match = HASH_IN_NAME.search(path.name)
    log.info("fetching torchvision's %s weights from %s", name, url)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=False)
    except Exception as exc:  # noqa: BLE001 - urllib, a hash mismatch (RuntimeError), a full disk
        raise EvaluationError(
            ErrorKind.DOWNLOAD_FAILED, f"this runner could not fetch torchvision's {name} weights ({exc})"
        ) from exc
    return path


def _timm(name: str) -> Path:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise EvaluationError(
            ErrorKind.BAD_HPARAMS, f"timm publishes no weights for {name!r} on the Hugging Face hub"
        )
    filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
    from huggingface_hub import hf_hub_download

    # The cache first, without a request (HEAD on every job would wait on the network); read from
    # the environment now, as the worker was started with it, not when huggingface_hub was imported.
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub")
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - not cached (LocalEntryNotFoundError) or unreadable
        missing: Exception = exc
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if not offline:
        log.info("fetching timm's %s weights from %s", name, repo)
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache))
        except Exception as exc:  # noqa: BLE001 - no network, a missing file, a full disk
            missing = exc
    raise EvaluationError(
        ErrorKind.DOWNLOAD_FAILED,
        f"this runner could not fetch timm's {name} weights from {repo}"
        f"{' (HF_HUB_OFFLINE is set and they are not in ' + cache + ')' if offline else ''}: "
        f"{type(missing).__name__}",
    ) from missing
