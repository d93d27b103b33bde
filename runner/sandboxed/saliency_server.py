"""The model server's ``saliency`` request (issue 17 item 5): saliency maps of a few images the
runner chose, computed in the sandbox beside the submitted model (runner/saliency.py and its numpy half
runner/saliency_maps.py, bound beside this file; runner/sandboxed/__init__.py).

parent → child
  {"op": "saliency", "id": k, "inputs": [{"offset", "shape": [n, C, H, W], "dtype", "scale"}],
   "out_offset": o, "out_capacity": c, "method": "auto"|name, "layer": name|null,
   "targets": [n class indices]|null, "fill": [C floats]|null, "side": S}
child → parent
  {"op": "out", "id": k, "shape": [n, S, S], "dtype": "uint8", "where", "nbytes", "compute_s",
   "info": {"saliency_method", "saliency_layer", "saliency_params" (JSON text), "saliency_targets"
   (JSON text)}}: map value / 255 is the saliency in [0, 1] (runner.saliency_maps.quantize)
  or an ``error`` frame (runtime_error, out_of_memory) as for ``run``.

``method`` "auto" picks by what the format exposes: an eager module (a .safetensors library
architecture) → Grad-CAM++ on ``layer4`` or the last Conv2d (runner.saliency.default_layer); an
ExportedProgram → Grad-CAM++ on the same layer found in its graph (runner.saliency.graph_layer);
a TorchScript module (no hookable layers once scripted) → input-gradient SmoothGrad;
ONNX (no gradients) → occlusion through the session. Gradients are taken in float32 whatever the
evaluation's precision. Like every answer of this program, the maps are data to the parent: it
checks their shape and dtype and trusts nothing else.
"""

from __future__ import annotations

import json
import time
from typing import Any

if __package__:  # imported by the runner
    from runner import saliency_maps
    from runner.sandboxed import rules
else:  # in the sandbox, beside model_server.py
    import rules  # type: ignore[no-redef,import-not-found]
    import saliency_maps  # type: ignore[no-redef,import-not-found]


def _torch_methods() -> Any:
    """runner/saliency.py, imported only for a torch model: an ONNX model's sandbox never imports
    torch for its occlusion maps (saliency_maps.py is numpy)."""
    if __package__:
        from runner import saliency
    else:
        import saliency  # type: ignore[no-redef,import-not-found]
    return saliency


MAX_SIDE = 64
PIXELS_PER_PASS = 64 * 32 * 32  # noisy copies' pixels per forward and backward pass


def choose(model: Any, method: str, layer: str | None) -> tuple[str, str | None]:
    """(method, layer) for ``model`` (model_server's TorchModel or OnnxModel): ``method`` as asked
    unless "auto" (module docstring). Raises ValueError for a method the format cannot run."""
    fmt = getattr(model, "format", "onnx")
    if method == "auto":
        if fmt == "onnx":
            return "occlusion", None
        if fmt == "safetensors":
            try:
                return "gradcam++", layer or _torch_methods().default_layer(model.module)
            except ValueError:
                return "smoothgrad", None
        if fmt == "pt2":
            try:
                _torch_methods().graph_layer(model.module, layer)
                return "gradcam++", layer
            except ValueError:
                return "smoothgrad", None
        return "smoothgrad", None
    if method not in saliency_maps.METHODS:
        raise ValueError(f"unknown saliency method {method!r}")
    if fmt == "onnx" and method != "occlusion":
        raise ValueError(f"an ONNX model has no gradients: {method} cannot run, occlusion can")
    if method in saliency_maps.LAYER_METHODS and fmt not in ("safetensors", "pt2"):
        raise ValueError(f"{method} needs hookable layers, which a {fmt} model does not expose here")
    return method, layer


def compute(model: Any, arrays: list, scales: list, header: dict[str, Any]) -> saliency_maps.Saliency:
    """The maps of the request's images (module docstring) on ``model``."""
    method, layer = choose(model, str(header.get("method") or "auto"), header.get("layer"))
    targets = header.get("targets")
    if getattr(model, "format", "onnx") == "onnx":
        import numpy as np

        images = np.array(arrays[0], dtype=np.float32) / (scales[0] or 1.0)  # a copy: shm stays free
        return saliency_maps.occlusion(
            lambda batch: model.predict([batch], [None]), images, fill=header.get("fill"), target=targets
        )
    saliency = _torch_methods()
    torch = model.torch
    x = model._to_tensor(arrays[0], scales[0], torch.float32).clone()
    module = model.module
    if method == "occlusion":
        return saliency.occlusion(
            lambda batch: module(torch.from_numpy(batch).to(x.device)).detach(),
            x,
            fill=header.get("fill"),
            target=targets,
        )
    options: dict[str, Any] = {"target": targets}
    if method in ("smoothgrad", "smooth-gradcam++"):
        # Noisy copies per pass: 64 CIFAR-sized images, 2 at 224 (a ResNet-50's activations for 64
        # images at 224 would be gigabytes on the CPU, past the sandbox's memory).
        options["max_batch"] = max(2, PIXELS_PER_PASS // (x.shape[2] * x.shape[3]))
    if method in saliency.LAYER_METHODS and model.format == "pt2":
        return saliency.explain_graph(method, module, x, layer=layer, **options)
    if method in saliency.LAYER_METHODS:
        options["layer"] = layer
    return saliency.explain(method, module, x, **options)


def answer(server: Any, header: dict[str, Any]) -> None:
    """Answer one ``saliency`` frame on model_server's ``server`` (its channel, model and shared
    memory): the maps as uint8 [n, S, S] at ``out_offset`` when they fit, else inline."""
    np = server.np
    ident = header.get("id")
    started = time.perf_counter()
    try:
        side = int(header.get("side") or 16)
        if not 1 <= side <= MAX_SIDE:
            raise ValueError(f"side {side} must lie in 1–{MAX_SIDE}")
        arrays, scales = server._inputs(header)
        result = compute(server.model, arrays, scales, header)
        del arrays
        maps = np.ascontiguousarray(saliency_maps.quantize(result.maps, side))
    except BaseException as exc:  # noqa: BLE001 - the submitted model may raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        oom = rules.is_out_of_memory(exc)
        server.channel.send(
            {
                "op": "error",
                "id": ident,
                "kind": rules.OUT_OF_MEMORY if oom else rules.RUNTIME_ERROR,
                "retry": False,
                "message": f"computing saliency maps failed: {type(exc).__name__}: {str(exc)[-600:]}",
            }
        )
        return
    reply = {
        "op": "out",
        "id": ident,
        "shape": list(maps.shape),
        "dtype": "uint8",
        "nbytes": maps.nbytes,
        "compute_s": time.perf_counter() - started,
        "info": {
            "saliency_method": result.method,
            "saliency_layer": result.layer,
            "saliency_params": json.dumps(result.params),
            "saliency_targets": json.dumps([int(t) for t in result.target]),
        },
    }
    server.send_array(reply, maps, header)
