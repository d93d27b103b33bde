"""A library architecture with submitted weights, built inside the sandbox by model_server.py.

- :func:`build` ``(spec, weights_path, torch, *, published=None) -> torch.nn.Module``: the
  architecture ``spec`` names (a dict: runner.architectures.ArchitectureSpec.to_json, already
  checked by the runner) built by its library (``torchvision.models.get_model`` or
  ``timm.create_model``, with ``num_classes`` and nothing else the submitter chose), the
  ``.safetensors`` state dict at ``weights_path`` loaded into it (safetensors' ``safe_open``;
  nothing is unpickled) after checking every name, shape and dtype, and the preprocessing
  ``(x - mean) / std`` in front. ``published``: the library's published weights (a file the
  runner fetched, runner/serve/published_weights.py), loaded first when ``spec["pretrained"]``.
- :func:`installed_architectures` ``() -> {"torchvision": [...], "timm": [...]}``: each
  library's classifier names, for ``runner architectures`` (the allow-list the site reads).

Standard library, torch, torchvision, timm and safetensors only (bound beside model_server.py,
runner/sandboxed/__init__.py); every error is a ChildError of kind invalid_artifact in one line.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any

if __package__:  # imported by the runner
    from runner.sandboxed import rules
else:  # in the sandbox, beside model_server.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import rules

ChildError = rules.ChildError
# State-dict prefixes that wrappers add (DataParallel, Lightning, torch.compile, EMA helpers).
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.", "net.")
SHOWN = 4  # names listed in one error line before "and N more"
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def installed_architectures() -> dict[str, list[str]]:
    """Sorted classifier names of the installed torchvision (``list_models`` of
    ``torchvision.models`` itself: no detection, segmentation, video or optical-flow model) and
    timm (``timm.list_models()``: every architecture, pretrained or not)."""
    import timm
    import torchvision

    return {
        "torchvision": sorted(torchvision.models.list_models(module=torchvision.models)),
        "timm": sorted(timm.list_models()),
    }


def _name(key: str, limit: int = 80) -> str:
    """A tensor name as an error line shows it: printable, at most ``limit`` characters (a hostile
    file may name its tensors with a megabyte of anything)."""
    text = "".join(c if c.isprintable() else "?" for c in key[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _listed(names: list[str] | set[str]) -> str:
    ordered = sorted(names)
    more = f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else ""
    return ", ".join(_name(n) for n in ordered[:SHOWN]) + more


def construct(library: str, name: str, num_classes: int) -> Any:
    """The library's ``name`` with ``num_classes`` outputs and its own random initialisation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's notes on init_weights and aux_logits
        if library == "torchvision":
            import torchvision

            if name not in torchvision.models.list_models(module=torchvision.models):
                raise ChildError(rules.INVALID_ARTIFACT, f"torchvision here has no classifier {name!r}")
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if library == "timm":
            import timm

            if not timm.is_model(name):
                raise ChildError(rules.INVALID_ARTIFACT, f"timm here has no architecture {name!r}")
            return timm.create_model(name, pretrained=False, num_classes=num_classes)
    raise ChildError(rules.INVALID_ARTIFACT, f"unknown library {library!r}: torchvision or timm")


def meta_state_dict(library: str, name: str, num_classes: int, torch: Any) -> dict[str, Any] | None:
    """The architecture's state dict on the meta device (shapes and dtypes, no storage), or None
    when the library's constructor needs real tensors (e.g. ``.item()`` on a schedule)."""
    try:
        with torch.device("meta"):
            return dict(construct(library, name, num_classes).state_dict())
    except ChildError:
        raise
    except Exception:  # noqa: BLE001 - the constructor computes on tensors: check after building
        return None


def _prefix_hint(found: set[str], expected: set[str]) -> str:
    """Advice when the file's names are the architecture's behind a wrapper's prefix."""
    for prefix in WRAPPER_PREFIXES:
        if found and all(k.startswith(prefix) for k in found) and {k[len(prefix):] for k in found} & expected:
            return f" (every name starts with {prefix!r}: save the unwrapped model's state_dict())"
    return ""


def _open(path: str) -> Any:
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ChildError(rules.INVALID_ARTIFACT, f"cannot read the .safetensors file: {exc}") from exc


def check_fit(weights: Any, expected: dict[str, Any], where: str, *, partial: bool = False) -> set[str]:
    """The names in the open safetensors file ``weights`` once checked against ``expected`` (a
    state dict, real or on the meta device) from the header alone, no tensor read: none missing
    (unless ``partial``) or unexpected, every shape equal, a floating dtype exactly where
    ``expected`` has one. Raises ChildError INVALID_ARTIFACT in one line."""
    found = set(weights.keys())
    missing = set() if partial else set(expected) - found
    unexpected = found - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listed(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
        raise ChildError(
            rules.INVALID_ARTIFACT,
            f"the weights do not fit {where}, whose state dict has {len(expected)} tensors: "
            f"{'; '.join(parts)}{_prefix_hint(found, set(expected))}",
        )
    wrong_shape = []
    for key in sorted(found):
        shape = list(weights.get_slice(key).get_shape())
        wanted = list(expected[key].shape)
        if shape != wanted:
            wrong_shape.append(f"{_name(key)} is {shape} in the file, {wanted} in {where}")
    if wrong_shape:
        more = f" and {len(wrong_shape) - 2} more" if len(wrong_shape) > 2 else ""
        raise ChildError(
            rules.INVALID_ARTIFACT,
            f"wrong shape: {'; '.join(wrong_shape[:2])}{more} (num_classes must match the classifier's "
            "outputs; the architecture the name builds must be the one trained)",
        )
    for key in sorted(found):
        dtype = str(weights.get_slice(key).get_dtype())
        if dtype.startswith(("F", "BF")) != expected[key].is_floating_point():
            raise ChildError(
                rules.INVALID_ARTIFACT,
                f"{_name(key)} is {SAFETENSORS_DTYPES.get(dtype, dtype)}, {where} has {str(expected[key].dtype).removeprefix('torch.')} "
                "there (floats for weights, integers for counters)",
            )
    return found


def read_weights(path: str, expected: dict[str, Any], torch: Any, where: str,
                 *, partial: bool = False) -> dict[str, Any]:
    """The tensors of the .safetensors file at ``path``, checked against ``expected`` (the built
    architecture's state dict) by :func:`check_fit`, floating ones cast to the architecture's
    dtype (float32: exact from float16 / bfloat16). Raises ChildError INVALID_ARTIFACT naming the
    names, shapes or dtypes, in one line."""
    with _open(path) as weights:
        found = check_fit(weights, expected, where, partial=partial)
        return {key: weights.get_tensor(key).to(expected[key].dtype) for key in sorted(found)}


def read_published(path: str, expected: dict[str, Any], torch: Any) -> dict[str, Any]:
    """The library's published weights the runner fetched (torchvision: a weights-only pickle
    loaded with ``weights_only=True``; timm: safetensors), keeping those whose name and shape the
    built architecture has (a classifier head of another num_classes is left out, so the
    submitted file must hold it)."""
    published: Any
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            published = load_file(path, device="cpu")
        else:
            published = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any fault of the file
        raise ChildError(rules.INVALID_ARTIFACT, f"cannot read the library's published weights: {exc}") from exc
    if isinstance(published, dict) and isinstance(published.get("state_dict"), dict):
        published = published["state_dict"]
    return {
        k: v.to(expected[k].dtype)
        for k, v in published.items()
        if k in expected and hasattr(v, "shape") and list(v.shape) == list(expected[k].shape)
    }


def build(spec: dict[str, Any], weights_path: str, torch: Any, *, published: str | None = None) -> Any:
    """The evaluable module (see the module docstring): ``Normalized(net, mean, std)`` in eval
    mode on the CPU. Raises ChildError INVALID_ARTIFACT."""
    library, name = str(spec["architecture"]).split(":", 1)
    where = f"{library}:{name} (num_classes {spec['num_classes']})"
    pretrained = bool(spec.get("pretrained"))
    # The names and shapes first, from the architecture built on the meta device (no memory, no
    # initialisation) and the file's header: a few bytes naming a 3-billion-parameter model are
    # refused before anything is allocated. A model that cannot be built on meta is checked after.
    skeleton = meta_state_dict(library, name, int(spec["num_classes"]), torch)
    if skeleton is not None:
        with _open(weights_path) as weights:
            check_fit(weights, skeleton, where, partial=pretrained)
    net = construct(library, name, int(spec["num_classes"]))
    expected = net.state_dict()
    state: dict[str, Any] = {}
    if pretrained:
        if not published:
            raise ChildError(rules.INVALID_ARTIFACT, f"no published weights of {library}:{name} were staged")
        state.update(read_published(published, expected, torch))
    state.update(read_weights(weights_path, expected, torch, where, partial=pretrained))
    missing = set(expected) - set(state)
    if missing:  # only with pretrained: what neither the published weights nor the file hold
        raise ChildError(
            rules.INVALID_ARTIFACT,
            f"the weights do not fit {where}: the published weights lack {_listed(missing)} (a head of "
            "another size) and the file does not hold them",
        )
    net.load_state_dict(state, strict=True)
    return Normalized(net, spec["mean"], spec["std"], torch).eval()


def Normalized(net: Any, mean: list[float], std: list[float], torch: Any) -> Any:  # noqa: N802 - a class factory
    """``net`` behind ``(x - mean) / std`` per channel: the module takes pixels in [0, 1], as
    every classifier does on this platform (the task's contract)."""

    class _Normalized(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x: Any) -> Any:
            return self.net((x - self.mean) / self.std)

    return _Normalized()
