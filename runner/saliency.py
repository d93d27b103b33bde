"""Saliency maps of image classifiers (issue 17 item 5; shared/PROTOCOLS.md, "Saliency").

Every method takes a model mapping float32 ``[N, C, H, W]`` in [0, 1] to pre-softmax logits
``[N, classes]`` and a batch ``x`` of that shape, and returns a :class:`Saliency`: ``maps``
float32 ``[N, H, W]`` in [0, 1] (one map per image, at the input's size) with the method, the
layer, the explained class per image and the parameters used. The explained class c is the
model's top-1 on the clean input unless ``target`` gives one per image; S_c is its logit.

Post-processing (PROTOCOLS, as jacobgil/pytorch-grad-cam): ReLU, bilinear upsampling to the
input's H×W (``align_corners=False``), then per map (L − min)/(max − min + 1e-7), so a constant
map becomes 0 and the largest value is just below 1.

==========================  ==================================================================
``gradcam``                 Selvaraju et al., arXiv 1610.02391, eq. 1–2
``gradcam++``               Chattopadhay et al., arXiv 1710.11063, eq. 19 with Y_c = exp(S_c)
``smooth-gradcam++``        Omeiza et al., arXiv 1908.01224, eq. 9–12
``normgrad``                Rebuffi et al., "There and Back Again", arXiv 2004.02866, sec. 3
``smoothgrad``              Smilkov et al., arXiv 1706.03825, eq. 3 (no layer: any
                            differentiable model)
``occlusion``               Zeiler & Fergus, arXiv 1311.2901, sec. 4.2 (no gradients: any
                            model, ONNX included, through a ``predict`` function)
==========================  ==================================================================

The layer methods need a ``torch.nn.Module`` whose layer is reachable by a dotted name
(``model.get_submodule``) and accepts forward hooks: eager modules, and ExportedPrograms after
``torch.export.unflatten``. The model must already be in ``eval()`` mode: batch norm in training
mode would mix the images of a batch. Pure torch; the trusted runner never runs these on a
submission outside the sandbox (runner/sandboxed/saliency_server.py does).

One piece past 450 lines: the layer methods share the hook, the noisy copies and the
post-processing, and the sandbox binds this file beside its server as one module (its numpy half,
runner/saliency_maps.py, is split off only so an ONNX model's sandbox need not import torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

if __package__:  # imported as runner.saliency
    from runner.saliency_maps import (
        EPS_NORMALIZE,
        LAYER_METHODS,
        METHODS,
        Saliency,
        minmax,
        occlusion,
        occlusion_window,
        quantize,
    )
else:  # in the sandbox, beside saliency_server.py
    from saliency_maps import (  # type: ignore[no-redef,import-not-found]
        EPS_NORMALIZE,
        LAYER_METHODS,
        METHODS,
        Saliency,
        minmax,
        occlusion,
        occlusion_window,
        quantize,
    )

__all__ = [
    "EPS_NORMALIZE",
    "LAYER_METHODS",
    "METHODS",
    "Saliency",
    "GraphTap",
    "default_layer",
    "explain",
    "explain_graph",
    "graph_layer",
    "gradcam",
    "gradcampp",
    "minmax",
    "noise_copies",
    "normalize",
    "normgrad",
    "occlusion",
    "occlusion_window",
    "quantize",
    "smooth_gradcampp",
    "smoothgrad",
]

EPS_ALPHA = 1e-6  # pytorch-grad-cam's GradCAM++ denominator guard
SMOOTH_CAM_COPIES, SMOOTH_CAM_SIGMA = 20, 0.15  # PROTOCOLS: Smooth Grad-CAM++ n 20, σ 0.15 on [0, 1]
SMOOTHGRAD_COPIES, SMOOTHGRAD_SIGMA = 50, 0.15  # PROTOCOLS: SmoothGrad 50 copies, σ 0.15


# --------------------------------------------------------------------------------------------
# Shared pieces.
# --------------------------------------------------------------------------------------------
def normalize(cams: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """PROTOCOLS post-processing of raw maps ``cams`` [N, h, w] → float32 [N, H, W] in [0, 1]:
    ReLU, bilinear upsampling to ``size`` = (H, W) with ``align_corners=False``, then per map
    (L − min)/(max − min + 1e-7) (a constant map becomes 0)."""
    if cams.ndim != 3:
        raise ValueError(f"raw maps must be [N, h, w], got shape {list(cams.shape)}")
    cams = torch.relu(cams.detach().float())
    if tuple(cams.shape[-2:]) != tuple(size):
        cams = F.interpolate(cams[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    low = cams.amin(dim=(1, 2), keepdim=True)
    high = cams.amax(dim=(1, 2), keepdim=True)
    out = (cams - low) / (high - low + EPS_NORMALIZE)
    return out.cpu().numpy().astype(np.float32)


def _check_input(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"images must be a float [N, C, H, W] batch, got {x.dtype} {list(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no images to explain")
    return x.detach().float()


def _logits_of(out: Any, n: int) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits [{n}, classes], got {shape}")
    return out.float()


def _targets(logits: torch.Tensor, target: Any) -> torch.Tensor:
    """The class explained per image: ``target`` when given, else the top-1 of ``logits``."""
    n, classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    if isinstance(target, torch.Tensor):
        t = target.detach().to(device=logits.device, dtype=torch.int64).reshape(-1)
    else:
        t = torch.as_tensor(np.asarray(target, dtype=np.int64).reshape(-1), device=logits.device)
    if len(t) != n:
        raise ValueError(f"{len(t)} targets for {n} images")
    if (t < 0).any() or (t >= classes).any():
        raise ValueError(f"targets must lie in 0–{classes - 1}")
    return t


def _layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        raise ValueError(f"the model has no layer {name!r}; its conv layers: {convs[-8:]}") from None


def default_layer(model: torch.nn.Module, x: torch.Tensor | None = None) -> str:
    """The layer the CAM methods use when none is named: ``layer4`` where the model has one
    (torchvision and CIFAR ResNets; its output is ``layer4[-1]``'s), also under a wrapper
    (``net.layer4`` of the library architectures, which normalize their input first: the
    shallowest), else the last ``Conv2d`` in module order. Given the batch ``x``, a ``layer4``
    whose output is 1×1 there (an ImageNet ResNet on 32×32 CIFAR images: one cell, no map) gives
    way to its ``layer3`` (2×2 there; PROTOCOLS offers layer3 for CIFAR), found by one forward
    pass of one image. Raises ValueError for a model without convolutions."""
    names = dict(model.named_modules())
    layer4 = sorted((n for n in names if n.split(".")[-1] == "layer4"), key=lambda n: n.count("."))
    if layer4:
        name = layer4[0]
        layer3 = name[: -len("layer4")] + "layer3"
        if x is not None and layer3 in names and _spatial(model, names[name], x) == 1:
            return layer3
        return name
    convs = [n for n, m in names.items() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("the model has no Conv2d layer: use smoothgrad or occlusion")
    return convs[-1]


def _spatial(model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor) -> int | None:
    """h·w of ``layer``'s output for the first image of ``x`` (None when it is not 4-D)."""
    seen: list[Any] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            model(x[:1].detach().float())
    finally:
        handle.remove()
    out = seen[-1] if seen else None
    return int(out.shape[-1] * out.shape[-2]) if isinstance(out, torch.Tensor) and out.ndim == 4 else None


def _scores_and_grads(
    model: torch.nn.Module, x: torch.Tensor, layer: torch.nn.Module, target: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and backward pass: ``(A, g, c)`` with A the layer's output [N, K, h, w], g =
    ∂S_c/∂A (each image's own class; images are independent in eval mode, so the gradient of
    Σ_n S_{c_n} is each image's), c [N] the classes."""
    captured: list[torch.Tensor] = []

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output)

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)  # the graph reaches A even when weights are frozen
            logits = _logits_of(model(x), len(x))
            if not captured:
                raise ValueError("the layer was not called by the model's forward")
            activations = captured[-1]
            if not isinstance(activations, torch.Tensor) or activations.ndim != 4:
                raise ValueError("the layer's output must be a [N, K, h, w] tensor")
            classes = _targets(logits, target)
            score = logits.gather(1, classes[:, None]).sum()
            (grads,) = torch.autograd.grad(score, activations)
    finally:
        handle.remove()
    return activations.detach().float(), grads.detach().float(), classes


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def noise_copies(x: torch.Tensor, copies: int, sigma: float, seed: int) -> torch.Tensor:
    """The ``copies`` noisy inputs of SmoothGrad and Smooth Grad-CAM++: [copies, N, C, H, W], x +
    σ·ε with ε ~ N(0, 1) [copies, 1, C, H, W] drawn at once from a generator seeded with ``seed``
    on x's device and added to every image alike, so that an image's map does not depend on the
    batch it came in (its position, its neighbours, a fixed batch's padding; the unit tests
    redraw them)."""
    eps = torch.randn((copies, 1, *x.shape[1:]), generator=_generator(seed, x.device), device=x.device)
    return x[None] + sigma * eps


def _copy_groups(noisy: torch.Tensor, max_batch: int) -> list[torch.Tensor]:
    """The noisy copies [copies, N, ...] in groups of k copies, k·N ≤ ``max_batch`` (at least one
    copy): each group is one forward and backward pass of k·N images (in eval mode the images of a
    batch do not interact, so this equals one pass per copy)."""
    per_pass = max(1, max_batch // max(1, noisy.shape[1]))
    return list(noisy.split(per_pass))


def _cam(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k A_k per image: weights [N, K], activations [N, K, h, w] → [N, h, w]."""
    return torch.einsum("nk,nkhw->nhw", weights, activations)


def _check_method_args(copies: int, sigma: float) -> None:
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be ≥ 0, got {sigma}")


# --------------------------------------------------------------------------------------------
# Layer methods.
# --------------------------------------------------------------------------------------------
def gradcam(
    model: torch.nn.Module, x: Any, *, layer: str | None = None, target: Sequence[int] | None = None
) -> Saliency:
    """Grad-CAM (Selvaraju et al., arXiv 1610.02391, eq. 1–2): α_k = mean_ij ∂S_c/∂A_kij,
    L = ReLU(Σ_k α_k A_k), post-processed (module docstring). ``x`` [N, C, H, W] in [0, 1];
    ``layer`` a dotted module name (default :func:`default_layer`). Raises ValueError for a bad
    batch, target or layer."""
    x = _check_input(x)
    name = layer or default_layer(model, x)
    a, g, c = _scores_and_grads(model, x, _layer(model, name), target)
    maps = normalize(_cam(g.mean(dim=(2, 3)), a), (x.shape[2], x.shape[3]))
    return Saliency("gradcam", maps, c.cpu().numpy(), name, {})


def _gradcampp_weights(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """w_k = Σ_ij α_kij·ReLU(D¹_kij), α = D² / (2D² + (Σ_ab A_kab)·D³ + 1e-6), α = 0 where D² = 0
    (Grad-CAM++ eq. 19 with D^p = g^p; Smooth Grad-CAM++ eq. 10–12 with the noise means)."""
    total = a.sum(dim=(2, 3), keepdim=True)
    alpha = d2 / (2 * d2 + total * d3 + EPS_ALPHA)
    alpha = torch.where(d2 != 0, alpha, torch.zeros_like(alpha))
    return (alpha * torch.relu(d1)).sum(dim=(2, 3))


def gradcampp(
    model: torch.nn.Module, x: Any, *, layer: str | None = None, target: Sequence[int] | None = None
) -> Saliency:
    """Grad-CAM++ (Chattopadhay et al., arXiv 1710.11063, eq. 19; PROTOCOLS): with Y_c = exp(S_c)
    the second and third derivatives are powers of g = ∂S_c/∂A, so α_kij = g² / (2g² +
    (Σ_ab A_kab)·g³ + 1e-6) (0 where g = 0), w_k = Σ_ij α_kij·ReLU(g_kij), L = ReLU(Σ_k w_k A_k)
    (exp(S_c) cancels in the normalization). As jacobgil/pytorch-grad-cam (084273b). Shapes and
    errors as :func:`gradcam`."""
    x = _check_input(x)
    name = layer or default_layer(model, x)
    a, g, c = _scores_and_grads(model, x, _layer(model, name), target)
    weights = _gradcampp_weights(g, g**2, g**3, a)
    maps = normalize(_cam(weights, a), (x.shape[2], x.shape[3]))
    return Saliency("gradcam++", maps, c.cpu().numpy(), name, {})


def smooth_gradcampp(
    model: torch.nn.Module,
    x: Any,
    *,
    layer: str | None = None,
    target: Sequence[int] | None = None,
    copies: int = SMOOTH_CAM_COPIES,
    sigma: float = SMOOTH_CAM_SIGMA,
    seed: int = 0,
    max_batch: int = 64,
) -> Saliency:
    """Smooth Grad-CAM++ (Omeiza et al., arXiv 1908.01224, eq. 9–12; PROTOCOLS): g_i = ∂S_c/∂A at
    ``copies`` noisy inputs (:func:`noise_copies`: σ in the input's units, [0, 1]); D¹ = mean g_i,
    D² = mean g_i², D³ = mean g_i³; α = D² / (2D² + (Σ_ab A_ab)·D³ + 1e-6) with A from the clean
    input; w_k = Σ_ij α·ReLU(D¹); L = ReLU(Σ_k w_k A_k). c is the clean input's top-1 unless
    given. Copies run ``max_batch`` images per pass. Shapes and errors as :func:`gradcam`;
    ValueError for copies < 1 or σ < 0."""
    _check_method_args(copies, sigma)
    x = _check_input(x)
    name = layer or default_layer(model, x)
    module = _layer(model, name)
    a, _, c = _scores_and_grads(model, x, module, target)
    d1 = torch.zeros_like(a)
    d2, d3 = torch.zeros_like(a), torch.zeros_like(a)
    for group in _copy_groups(noise_copies(x, copies, sigma, seed), max_batch):
        k = len(group)
        _, g, _ = _scores_and_grads(model, group.flatten(0, 1), module, c.repeat(k))
        g = g.unflatten(0, (k, len(x)))
        d1 += g.sum(dim=0)
        d2 += (g**2).sum(dim=0)
        d3 += (g**3).sum(dim=0)
    weights = _gradcampp_weights(d1 / copies, d2 / copies, d3 / copies, a)
    maps = normalize(_cam(weights, a), (x.shape[2], x.shape[3]))
    return Saliency(
        "smooth-gradcam++", maps, c.cpu().numpy(), name, {"copies": copies, "sigma": sigma, "seed": seed}
    )


def normgrad(
    model: torch.nn.Module,
    x: Any,
    *,
    layer: str | Sequence[str] | None = None,
    target: Sequence[int] | None = None,
    selective: bool = True,
) -> Saliency:
    """NormGrad (Rebuffi, Fong, Ji, Vedaldi, arXiv 2004.02866, sec. 3; PROTOCOLS): a virtual 1×1
    identity convolution after the layer has weight gradient Σ_u x_u g_uᵀ; the map at location u
    is N(u) = ‖x_u g_uᵀ‖_F = ‖x_u‖₂·‖g_u‖₂ (x_u, g_u the layer's activation and ∂S_c/∂A channel
    vectors), or with ``selective`` (default; TorchRay ``norm_grad.py``) ‖max(0, x_u ⊙ g_u)‖₂.
    ``layer`` one dotted name or several (the multi-layer variant: each map upsampled and
    normalized, then multiplied, and the product normalized again). Shapes and errors as
    :func:`gradcam`."""
    x = _check_input(x)
    names = [layer] if isinstance(layer, str) else list(layer) if layer else [default_layer(model, x)]
    size = (x.shape[2], x.shape[3])
    product: np.ndarray | None = None
    classes: torch.Tensor | None = None
    for name in names:
        a, g, classes = _scores_and_grads(
            model, x, _layer(model, name), target if classes is None else classes
        )
        if selective:
            raw = torch.relu(a * g).norm(dim=1)
        else:
            raw = a.norm(dim=1) * g.norm(dim=1)
        one = normalize(raw, size)
        product = one if product is None else product * one
    assert product is not None and classes is not None
    maps = product if len(names) == 1 else normalize(torch.from_numpy(product), size)
    return Saliency("normgrad", maps, classes.cpu().numpy(), ",".join(names), {"selective": selective})


# --------------------------------------------------------------------------------------------
# Input methods.
# --------------------------------------------------------------------------------------------
def smoothgrad(
    model: Callable[[torch.Tensor], Any],
    x: Any,
    *,
    target: Sequence[int] | None = None,
    copies: int = SMOOTHGRAD_COPIES,
    sigma: float = SMOOTHGRAD_SIGMA,
    seed: int = 0,
    max_batch: int = 64,
) -> Saliency:
    """SmoothGrad (Smilkov et al., arXiv 1706.03825, eq. 3; PROTOCOLS): M = max over channels of
    |mean_i ∇_x S_c(x + N(0, σ²))| over ``copies`` noisy inputs (:func:`noise_copies`), then
    post-processed (module docstring). Any differentiable ``model`` (a module, a TorchScript or
    exported program's module); no layer; copies run ``max_batch`` images per pass. Shapes and
    errors as :func:`gradcam`."""
    _check_method_args(copies, sigma)
    x = _check_input(x)
    with torch.no_grad():
        c = _targets(_logits_of(model(x), len(x)), target)
    total = torch.zeros_like(x)
    for group in _copy_groups(noise_copies(x, copies, sigma, seed), max_batch):
        k = len(group)
        with torch.enable_grad():
            noisy = group.flatten(0, 1).requires_grad_(True)
            score = _logits_of(model(noisy), k * len(x)).gather(1, c.repeat(k)[:, None]).sum()
            (grad,) = torch.autograd.grad(score, noisy)
        total += grad.float().unflatten(0, (k, len(x))).sum(dim=0)
    raw = (total / copies).abs().amax(dim=1)
    maps = normalize(raw, (x.shape[2], x.shape[3]))
    return Saliency(
        "smoothgrad", maps, c.cpu().numpy(), None, {"copies": copies, "sigma": sigma, "seed": seed}
    )


# --------------------------------------------------------------------------------------------
# Layers of an ExportedProgram's graph.
# --------------------------------------------------------------------------------------------
class GraphTap(torch.nn.Module):
    """An FX GraphModule (``ExportedProgram.module()``, whose calls are inlined: no submodule runs,
    so no hook fires) run node by node through ``torch.fx.Interpreter``, the output of node
    ``node`` passed through ``self.tap`` (an identity) so that the layer methods can hook it as
    layer ``"tap"``. Same outputs as the graph module."""

    def __init__(self, graph_module: torch.nn.Module, node: str):
        super().__init__()
        self.graph_module = graph_module
        self.node = node
        self.tap = torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> Any:
        tap, name = self.tap, self.node

        class Tapped(torch.fx.Interpreter):
            def run_node(self, n: torch.fx.Node) -> Any:
                out = super().run_node(n)
                return tap(out) if n.name == name else out

        return Tapped(self.graph_module).run(x)


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def _layer4(four_d: list[torch.fx.Node]) -> str | None:
    """The dotted path of the exported model's ``layer4`` (a ResNet's, also inside a wrapper:
    ``net.layer4`` of a model that normalizes its input first), or its ``layer3`` when layer4's
    output is 1×1 at the exported size (as :func:`default_layer`); None when it has no layer4."""
    for node in four_d:
        parts = _module_path(node).split(".")
        if "layer4" in parts:
            name = ".".join(parts[: parts.index("layer4") + 1])
            inside = [n for n in four_d if _module_path(n) == name or _module_path(n).startswith(name + ".")]
            layer3 = name[: -len("layer4")] + "layer3"
            has3 = any(_module_path(n) == layer3 or _module_path(n).startswith(layer3 + ".") for n in four_d)
            if has3 and _cells(inside[-1]) == 1:
                return layer3
            return name
    return None


def _cells(node: torch.fx.Node) -> int | None:
    """h·w of a 4-D node's value as exported (None when symbolic)."""
    shape = getattr(node.meta.get("val"), "shape", None)
    try:
        return int(shape[-1]) * int(shape[-2]) if shape is not None else None
    except (TypeError, ValueError):
        return None


def graph_layer(graph_module: torch.nn.Module, layer: str | None = None) -> tuple[str, str]:
    """(node name, layer name) of the activation the CAM methods use in an FX graph: the last 4-D
    node inside module ``layer`` (its dotted path in the exported model; default ``layer4`` where
    the graph has one, as :func:`default_layer`, also under a wrapper: ``net.layer4``), else the
    last convolution's output. Raises ValueError when there is none."""
    graph = getattr(graph_module, "graph", None)
    if graph is None:
        raise ValueError("not a graph module: the model exposes no graph")
    four_d = [
        n for n in graph.nodes if n.op == "call_function" and getattr(n.meta.get("val"), "ndim", None) == 4
    ]
    wanted = layer or _layer4(four_d)
    if wanted:
        inside = [n for n in four_d if _module_path(n) == wanted or _module_path(n).startswith(wanted + ".")]
        if not inside:
            raise ValueError(f"the graph has no 4-D activation inside {wanted!r}")
        return inside[-1].name, wanted
    convs = [n for n in four_d if "convolution" in str(n.target) or "conv2d" in str(n.target)]
    if not convs:
        raise ValueError("the graph has no convolution: use smoothgrad or occlusion")
    return convs[-1].name, _module_path(convs[-1]) or convs[-1].name


def explain_graph(
    method: str, graph_module: torch.nn.Module, x: Any, *, layer: str | None = None, **options: Any
) -> Saliency:
    """A layer method (:data:`LAYER_METHODS`) on an ExportedProgram's module: :func:`graph_layer`
    picks the activation, :class:`GraphTap` exposes it; the record names the layer as the exported
    model's module path. Raises ValueError as :func:`graph_layer` and the method do."""
    if method not in LAYER_METHODS:
        raise ValueError(f"{method} is not a layer method")
    node, name = graph_layer(graph_module, layer)
    result = explain(method, GraphTap(graph_module, node), x, layer="tap", **options)
    result.layer = name
    result.params = {**result.params, "graph_node": node}
    return result


# --------------------------------------------------------------------------------------------
# Dispatch.
# --------------------------------------------------------------------------------------------
def explain(method: str, model: Any, x: Any, **options: Any) -> Saliency:
    """Dispatch by name (:data:`METHODS`): ``model`` a module for the gradient methods, a numpy
    ``predict`` function for ``occlusion``. Raises ValueError for an unknown method."""
    functions: dict[str, Callable[..., Saliency]] = {
        "gradcam": gradcam,
        "gradcam++": gradcampp,
        "smooth-gradcam++": smooth_gradcampp,
        "normgrad": normgrad,
        "smoothgrad": smoothgrad,
        "occlusion": occlusion,
    }
    if method not in functions:
        raise ValueError(f"unknown saliency method {method!r}; known: {', '.join(METHODS)}")
    return functions[method](model, x, **options)
