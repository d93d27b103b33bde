"""The ``gradient_variance`` hook's statistic, computed by the trusted runner: the unbiased
per-coordinate variance of a batch's per-sample gradients (AdAdaGrad's norm and coordinate-wise
tests, shared/PROTOCOLS.md), for runner/tracks/training/loop.py to write into the optimizer's
shared memory before a step. Never sees the submission.
"""
from __future__ import annotations

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
    from torch.func import functional_call, grad, vmap

    names = [name for name, _ in model.named_parameters()]
    params = {name: p.detach() for name, p in model.named_parameters()}
    total = sum(p.numel() for p in params.values())
    b = len(y)
    if b < 2:
        return torch.zeros(total, dtype=torch.float32)
    buffers = batch_statistics(model, params, x)

    def sample_loss(weights, xi, yi):
        return F.cross_entropy(functional_call(model, (weights, buffers), (xi[None],)), yi[None])

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    chunk = max(1, min(b, chunk_bytes // (4 * max(total, 1))))
    count, mean, m2 = 0, torch.zeros(total, dtype=torch.float64), torch.zeros(total, dtype=torch.float64)
    was_training = model.training
    model.eval()  # BatchNorm normalizes with the batch statistics now in its buffers
    try:
        for start in range(0, b, chunk):
            grads = per_sample(params, x[start:start + chunk], y[start:start + chunk])
            g = torch.cat([grads[name].reshape(grads[name].shape[0], -1) for name in names], 1).double()
            m = g.shape[0]
            chunk_mean = g.mean(0)
            chunk_m2 = (g - chunk_mean).square_().sum(0)
            delta = chunk_mean - mean
            merged = count + m
            mean += delta * (m / merged)
            m2 += chunk_m2 + delta.square_() * (count * m / merged)
            count = merged
    finally:
        model.train(was_training)
    return (m2 / (b - 1)).float()


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
