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
a TorchScript module → input-gradient SmoothGrad; ONNX (no gradients) → occlusion through the
session. The runner names each method (runner/saliency_sample.py runs every method the format
allows, one request per method and chunk); "auto" is kept for one-off requests.

TorchScript has no layer methods: a loaded RecursiveScriptModule's submodules refuse forward hooks
(torch 2.14: "register_forward_hook is not supported on ScriptModules"), and calling a submodule
alone gives its activation only when the rest of the forward is known, which the compiled module
does not say in a form this server can replay.

A model exported with a fixed batch size (or a bounded range: the model's ``pieces``, the split
evaluation uses) gets exactly the sizes it accepts: the images are split into pieces of at most
its largest batch, each padded with repeats of its last image (and target) up to its smallest,
the noisy copies run that many images per pass, and the padding's maps are dropped. Gradients are
taken in float32 whatever the evaluation's precision. Maps that are not finite (a model whose
gradients are NaN) are refused as an error of this request. Like every answer of this program,
the maps are data to the parent: it checks their shape and dtype and trusts nothing else.
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
    """The maps of the request's images (module docstring) on ``model``. Raises ValueError for a
    method the model cannot run and for maps that are not finite."""
    method, layer = choose(model, str(header.get("method") or "auto"), header.get("layer"))
    targets = header.get("targets")
    if getattr(model, "format", "onnx") == "onnx":
        import numpy as np

        images = np.array(arrays[0], dtype=np.float32) / (scales[0] or 1.0)  # a copy: shm stays free
        result = saliency_maps.occlusion(
            lambda batch: model.predict([batch], [None]), images, fill=header.get("fill"), target=targets
        )
        return _finite(result)
    torch = model.torch
    x = model._to_tensor(arrays[0], scales[0], torch.float32).clone()
    if targets is not None and len(targets) != len(x):
        raise ValueError(f"{len(targets)} targets for {len(x)} images")
    pieces = model.pieces(len(x)) if hasattr(model, "pieces") else [(0, len(x), 0)]
    results = []
    for start, stop, pad in pieces:
        chunk = x[start:stop]
        chunk_targets = None if targets is None else list(targets[start:stop])
        if pad:
            chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
            if chunk_targets is not None:
                chunk_targets += [chunk_targets[-1]] * pad
        one = _one_method(model, method, layer, chunk, chunk_targets, header, pieces)
        one.maps, one.target = one.maps[: stop - start], one.target[: stop - start]
        results.append(one)
    first = results[0]
    if len(results) > 1:
        import numpy as np

        first.maps = np.concatenate([r.maps for r in results])
        first.target = np.concatenate([r.target for r in results])
    return _finite(first)


def _one_method(
    model: Any, method: str, layer: str | None, x: Any, targets: Any, header: dict[str, Any], pieces: list
) -> saliency_maps.Saliency:
    """``method`` on one batch ``x`` of a size the model accepts (a piece of :func:`compute`)."""
    saliency = _torch_methods()
    torch = model.torch
    module = model.module
    fixed = len(pieces) > 1 or pieces[0][2] > 0 or getattr(model, "batch_max", None) is not None
    if method == "occlusion":
        n = len(x)

        def predict(batch: Any) -> Any:  # a fixed batch: the occluded copies n images at a time
            batch = torch.from_numpy(batch).to(x.device)
            if not fixed:
                return module(batch).detach()
            outs = []
            for lo in range(0, len(batch), n):
                part = batch[lo : lo + n]
                real = len(part)
                if real < n:
                    part = torch.cat([part, part[-1:].expand(n - real, *part.shape[1:])])
                outs.append(module(part).detach()[:real])
            return torch.cat(outs)

        return saliency.occlusion(predict, x, fill=header.get("fill"), target=targets)
    options: dict[str, Any] = {"target": targets}
    if method in ("smoothgrad", "smooth-gradcam++"):
        # Noisy copies per pass: 64 CIFAR-sized images, 2 at 224 (a ResNet-50's activations for 64
        # images at 224 would be gigabytes on the CPU, past the sandbox's memory); never more
        # than the model's largest batch, never fewer than this piece's images (its smallest).
        per_pass = max(2, PIXELS_PER_PASS // (x.shape[2] * x.shape[3]))
        high = getattr(model, "batch_max", None)
        options["max_batch"] = max(len(x), min(per_pass, high) if high else per_pass)
    if method in saliency.LAYER_METHODS and model.format == "pt2":
        return saliency.explain_graph(method, module, x, layer=layer, **options)
    if method in saliency.LAYER_METHODS:
        options["layer"] = layer
    return saliency.explain(method, module, x, **options)


def _finite(result: saliency_maps.Saliency) -> saliency_maps.Saliency:
    """``result`` when its maps are finite; ValueError otherwise (NaN or infinite gradients or
    scores: no map can be drawn from them)."""
    import numpy as np

    if not np.isfinite(result.maps).all():
        raise ValueError(
            f"the model's {result.method} maps are not finite (NaN or infinite gradients or scores)"
        )
    return result


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
