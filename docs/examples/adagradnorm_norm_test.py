"""The gradient_variance hook (docs/submissions.md): AdaGradNorm whose batch grows by the norm
test, AdAdaGradNorm as Lau, Liu and Kolar define it (arXiv 2402.11215; shared/PROTOCOLS.md).

The class says ``wants_gradient_variance = True`` and ``wants_next_batch_size = True``. Before
every step the runner writes the unbiased per-coordinate variance V of the batch's per-sample
gradients into ``self.gradient_variance`` (float32 tensors shaped like the params, same order)
and the batch's size into ``self.batch_size_now``; ``p.grad`` holds the batch's mean gradient ḡ.

Step (AdaGradNorm, one scalar): s² ← s² + ‖ḡ‖², p ← p − lr / s · ḡ.
Norm test: keep b when Σ_j V_j / b ≤ η² ‖ḡ‖², else ask for ⌈Σ_j V_j / (η² ‖ḡ‖²)⌉; batches only
grow and stop at ``max_batch`` (no test once there). η defaults to 0.1, the authors' code's.
"""
import math

import torch


def norm_test(sum_variance: float, grad_norm_sq: float, batch: int, eta: float, current: int,
              max_batch: int) -> int:
    """The next batch size: ``current`` while Σ_j V_j / b ≤ η² ‖ḡ‖², else ⌈Σ_j V_j / (η² ‖ḡ‖²)⌉,
    never below ``current`` and never above ``max_batch``."""
    if current >= max_batch:
        return max_batch
    threshold = eta * eta * grad_norm_sq
    if sum_variance / batch <= threshold:
        return current
    wanted = math.ceil(sum_variance / threshold) if threshold > 0 else max_batch
    return min(max_batch, max(current, wanted))


class AdaGradNormNormTest(torch.optim.Optimizer):
    wants_gradient_variance = True
    wants_next_batch_size = True

    def __init__(self, params, lr=0.5, eta=0.1, s0=1e-2, start=16, max_batch=1024):
        super().__init__(params, {"lr": lr})
        self.eta, self.max_batch = eta, max_batch
        self.s_sq = s0 * s0
        self.size = start
        self.next_batch_size = start

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        grad_norm_sq = sum(float(p.grad.double().square().sum()) for p in params if p.grad is not None)
        sum_variance = sum(float(v.double().sum()) for v in self.gradient_variance)
        self.s_sq += grad_norm_sq
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] / math.sqrt(self.s_sq))
        self.size = norm_test(sum_variance, grad_norm_sq, self.batch_size_now, self.eta, self.size, self.max_batch)
        self.next_batch_size = self.size


def make_optimizer(params, lr=0.5, eta=0.1, s0=1e-2, start=16, max_batch=1024):
    return AdaGradNormNormTest(params, lr=lr, eta=eta, s0=s0, start=start, max_batch=max_batch)
