"""Per-sample gradient statistics the trusted runner computes for the optimizer hooks, for
runner/tracks/training/loop.py to write into the optimizer's shared memory: ``gradient_variance``
(the unbiased per-coordinate variance of a batch's per-sample gradients, AdAdaGrad's norm and
coordinate-wise tests) and ``grand_scores`` (each example's gradient norm, GraNd; both in
shared/PROTOCOLS.md). Never sees the submission.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

CHUNK_BYTES = 256 << 20  # per-sample gradients (float32) held at once


def gradient_variance(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                      chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """V_j = Σ_i (g_ij − ḡ_j)² / (b − 1), the unbiased per-coordinate variance of the per-sample
    gradients g_i = ∇ CE(f(x_i), y_i) over the batch ``x`` [b, C, H, W], ``y`` [b] (int64 labels)
    at the model's current weights: float32 [P], every parameter flattened in
    ``model.parameters()`` order, in gradient units squared. Zeros for b = 1.

    BatchNorm layers normalize each sample with the whole batch's statistics, held fixed (the
    mean and biased variance train mode normalizes with; the model's running statistics are
    untouched), so each g_i is well defined; the mean of the g_i is then not the train-mode batch
    gradient, which also flows through the statistics. Per-sample gradients come from torch.func
    (vmap of grad over functional_call) in chunks of at most ``chunk_bytes`` of float32 gradients,
    merged in float64 by the law of total variance (Chan, Golub, LeVeque). The model's train/eval
    mode is restored; raises what the model's forward raises."""
    total = sum(p.numel() for p in model.parameters())
    b = len(y)
    if b < 2:
        return torch.zeros(total, dtype=torch.float32)
    count, mean, m2 = 0, torch.zeros(total, dtype=torch.float64), torch.zeros(total, dtype=torch.float64)
    for g in per_sample_gradients(model, x, y, chunk_bytes=chunk_bytes):
        g = g.double()
        m = g.shape[0]
        chunk_mean = g.mean(0)
        chunk_m2 = (g - chunk_mean).square_().sum(0)
        delta = chunk_mean - mean
        merged = count + m
        mean += delta * (m / merged)
        m2 += chunk_m2 + delta.square_() * (count * m / merged)
        count = merged
    return (m2 / (b - 1)).float()


def gradient_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """GraNd's ‖∇_w CE(f_w(x_i), y_i)‖₂ over every parameter w of the model, for each example of
    ``x`` [b, C, H, W] with labels ``y`` [b] (int64), at the current weights: float32 [b], in
    gradient units (Paul, Ganguli, Dziugaite 2021, eq. 1 for one w). BatchNorm is held at the
    statistics of this ``x`` as in :func:`gradient_variance` (so b must be > 1 for a BatchNorm
    layer without spatial dimensions); squares summed in float64. Raises what the forward raises."""
    norms = [g.double().square().sum(1).sqrt() for g in per_sample_gradients(model, x, y, chunk_bytes=chunk_bytes)]
    return torch.cat(norms).float() if norms else torch.zeros(0, dtype=torch.float32)


def per_sample_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         chunk_bytes: int = CHUNK_BYTES) -> Iterator[torch.Tensor]:
    """Each example's gradient g_i = ∇ CE(f(x_i), y_i), flat in ``model.parameters()`` order, as
    float32 [m, P] chunks of at most ``chunk_bytes`` (at least one example each), in the order of
    ``x``. BatchNorm layers normalize with the statistics of the whole ``x`` held fixed
    (:func:`batch_statistics`); the model's running statistics and train/eval mode are left as
    they were. torch.func: vmap of grad over functional_call."""
    from torch.func import functional_call, grad, vmap

    names = [name for name, _ in model.named_parameters()]
    params = {name: p.detach() for name, p in model.named_parameters()}
    total = sum(p.numel() for p in params.values())
    b = len(y)
    buffers = batch_statistics(model, params, x)

    def sample_loss(weights, xi, yi):
        return F.cross_entropy(functional_call(model, (weights, buffers), (xi[None],)), yi[None])

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    chunk = max(1, min(b, chunk_bytes // (4 * max(total, 1))))
    was_training = model.training
    model.eval()  # BatchNorm normalizes with the batch statistics now in its buffers
    try:
        for start in range(0, b, chunk):
            grads = per_sample(params, x[start:start + chunk], y[start:start + chunk])
            yield torch.cat([grads[name].reshape(grads[name].shape[0], -1) for name in names], 1)
    finally:
        model.train(was_training)


def batch_statistics(model: torch.nn.Module, params: dict[str, torch.Tensor],
                     x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's buffers (copies) with each BatchNorm's running mean and variance replaced by
    the batch's: the mean and biased variance of the layer's input over every dimension but the
    channel's, as train mode normalizes with, from one forward in train mode without gradients."""
    from torch.func import functional_call

    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            def record(module, inputs, name=name):
                (inp,) = inputs
                dims = [d for d in range(inp.dim()) if d != 1]
                found[f"{name}.running_mean"] = inp.mean(dims)
                found[f"{name}.running_var"] = inp.var(dims, unbiased=False)
            handles.append(module.register_forward_pre_hook(record))
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            functional_call(model, (params, buffers), (x,))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    buffers.update(found)
    return buffers


def gradient_norms_by_batch(model: torch.nn.Module, images: Callable[[torch.Tensor], torch.Tensor],
                            labels: torch.Tensor, batch: int) -> torch.Tensor:
    """:func:`gradient_norms` of all n examples (float32 [n], gradient units, in order), scored in
    consecutive batches of ``batch`` examples, each with BatchNorm at its own statistics; a last
    batch shorter than ``batch`` joins the one before (BatchNorm wants more than one example).
    ``images(index)`` returns the inputs of the examples ``index`` (int64 [m]) as [m, C, H, W];
    ``labels`` is int64 [n]."""
    n = len(labels)
    starts = list(range(0, n, max(1, batch)))
    if len(starts) > 1 and n - starts[-1] < batch:
        starts.pop()
    scores = torch.empty(n, dtype=torch.float32)
    for start, stop in zip(starts, [*starts[1:], n], strict=True):
        index = torch.arange(start, stop)
        scores[start:stop] = gradient_norms(model, images(index), labels[index])
    return scores
