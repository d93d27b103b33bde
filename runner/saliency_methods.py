"""Which saliency methods a classifier result carries (issue 17 item 5; runner/saliency_sample.py
runs them): the operator's ``RUNNER_SALIENCY_METHODS`` (``--saliency-methods`` of ``runner work``
and ``runner run``) read strictly, the plan per model format (``auto``: every method the format
allows, cheapest first; a named method the format cannot run is skipped with the reason), and each
method's relative cost, from which the budget predicts whether a later method's first request
fits. Names are runner/saliency.py's (:data:`runner.saliency_maps.METHODS`).
"""

from __future__ import annotations

from runner.saliency_maps import LAYER_METHODS, METHODS, occlusion_window
from runner.untrusted import printable

METHODS_ENV = "RUNNER_SALIENCY_METHODS"
# "auto" per format, cheapest first: Grad-CAM++ and NormGrad take one pass per image, Smooth
# Grad-CAM++ 21, so a tight budget still gives every image of the sample Grad-CAM++.
LAYER_AUTO = ("gradcam++", "normgrad", "smooth-gradcam++")
AUTO = {"pt2": LAYER_AUTO, "safetensors": LAYER_AUTO, "torchscript": ("smoothgrad",), "onnx": ("occlusion",)}
FALLBACK = "smoothgrad"  # auto, when every layer method was refused (a model without convolutions)
# Forward-and-backward passes per image (runner/saliency.py's defaults): what a later method's first
# request is predicted to cost from the method before it, so it starts only when it fits.
PASSES = {"gradcam": 1.0, "gradcam++": 1.0, "normgrad": 1.0, "smooth-gradcam++": 21.0, "smoothgrad": 51.0}
LAYER_FORMATS = ("pt2", "safetensors")
CANNOT = {
    "torchscript": "a TorchScript module exposes no hookable layers (torch refuses forward hooks on a "
    "ScriptModule's submodules)",
    "onnx": "an ONNX model has no gradients; occlusion is its method",
}


def parse_methods(text: str | None) -> tuple[str, ...] | None:
    """The operator's ``RUNNER_SALIENCY_METHODS`` / ``--saliency-methods``: None for ``auto`` (also
    unset or blank), else the named runner/saliency.py methods in the order given. Names are exact
    (lower case, spaces around a comma allowed). Raises ValueError naming the known methods for an
    unknown name, an empty item (``",,"``), a name given twice or ``auto`` mixed with names."""
    if text is None or not text.strip() or text.strip() == "auto":
        return None
    known = f"known: auto or a comma list of {', '.join(METHODS)}"
    names = [part.strip() for part in text.split(",")]
    if any(not name for name in names):
        raise ValueError(f"saliency methods {printable(text)[:80]!r} has an empty item; {known}")
    for name in names:
        if name == "auto":
            raise ValueError(f"saliency methods: 'auto' cannot be combined with names; {known}")
        if name not in METHODS:
            hint = f" (did you mean {name.lower()!r}?)" if name.lower() in METHODS else ""
            raise ValueError(f"unknown saliency method {printable(name)[:40]!r}{hint}; {known}")
    if len(set(names)) != len(names):
        raise ValueError(f"saliency methods {printable(text)[:80]!r} names a method twice; {known}")
    return tuple(names)


def plan(fmt: str | None, asked: tuple[str, ...] | None) -> tuple[list[str], dict[str, str]]:
    """(methods to run in order, {method: why skipped}) for a model of format ``fmt`` (pt2,
    safetensors, torchscript, onnx) and the operator's ``asked`` (None: auto, module docstring).
    A layer method needs a layer format; every method but occlusion needs gradients (not ONNX)."""
    if asked is None:
        return list(AUTO.get(fmt or "", ("smoothgrad",))), {}
    run, skipped = [], {}
    for method in asked:
        if fmt == "onnx" and method != "occlusion":
            skipped[method] = f"{method} cannot run here: {CANNOT['onnx']}"
        elif method in LAYER_METHODS and fmt not in LAYER_FORMATS:
            skipped[method] = (
                f"{method} cannot run here: {CANNOT.get(fmt or '', 'the format exposes no layers')}"
            )
        else:
            run.append(method)
    return run, skipped


def passes(method: str, size: tuple[int, ...]) -> float:
    """Relative cost per image of ``method`` on images of ``size`` (H, W): :data:`PASSES`, or for
    occlusion one forward pass (about a third of a forward and backward pass) per window."""
    if method != "occlusion":
        return PASSES.get(method, 1.0)
    height, width = (int(v) for v in size[-2:])
    k, stride = occlusion_window(height, width)
    windows = (-(-max(height - k, 0) // stride) + 1) * (-(-max(width - k, 0) // stride) + 1)
    return (windows + 1) / 3.0
