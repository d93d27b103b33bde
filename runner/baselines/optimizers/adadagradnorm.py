"""AdAdaGradNorm: AdaGradNorm whose batch grows by the norm test (Lau, Liu, Kolar, "AdAdaGrad:
Adaptive Batch Size Schemes for Adaptive Gradient Methods", arXiv 2402.11215; shared/PROTOCOLS.md,
"AdAdaGrad / AdAdaGradNorm").

Step (the paper's AdaGradNorm, one scalar for the whole model, s_0 = ``s0``):

    s² ← s² + ‖ḡ‖²,    θ ← θ − (lr / s) · ḡ

(The authors' code keeps one accumulator per output row instead; this is the paper's scalar.)
Norm test, after each step, on the batch that step used (size b_k, mean gradient ḡ, unbiased
per-coordinate variance V_j of its per-sample gradients): keep b_k when Σ_j V_j / b_k ≤ η² ‖ḡ‖²,
else b_{k+1} = ⌈Σ_j V_j / (η² ‖ḡ‖²)⌉. Batches only grow and stop at ``b_max``; no test once there.
η (``eta``) defaults to 0.1, the authors' code's.

Where the numbers come from: the runner's hooks (docs/submissions.md). ``wants_gradient_variance``:
before every step ``self.gradient_variance`` holds V (float32 tensors shaped like the params) and
``self.batch_size_now`` the batch's size b_k; ``p.grad`` is ḡ. ``wants_next_batch_size``: after
the step the runner draws the next batch at ``self.next_batch_size``. The first batch is the
task's own (opt-digits: 64).

The cap: an optimizer is not told the task's batch bounds, so ``b_max`` is a hyperparameter,
set per board to the task's upper bound (opt-digits 1,024); a larger value is caught by the
runner's bound check as wrong_output. The test starts from the largest size asked so far, never
from a last batch the runner cut to the budget, so sizes never shrink.
"""
import math

import torch


def norm_test(sum_variance, grad_norm_sq, batch, eta, current, b_max):
    """The next batch size by the norm test: ``current`` (the largest size asked so far, in
    examples) while Σ_j V_j / b ≤ η² ‖ḡ‖², else ⌈Σ_j V_j / (η² ‖ḡ‖²)⌉; never below ``current``,
    never above ``b_max``. ‖ḡ‖² = 0 with any variance asks for ``b_max``."""
    if current >= b_max:
        return b_max
    threshold = eta * eta * grad_norm_sq
    if sum_variance / batch <= threshold:
        return current
    if threshold <= 0:
        return b_max
    wanted = sum_variance / threshold
    if not math.isfinite(wanted):
        return b_max
    return min(b_max, max(current, math.ceil(wanted)))


class AdAdaGradNorm(torch.optim.Optimizer):
    wants_gradient_variance = True
    wants_next_batch_size = True

    def __init__(self, params, lr=0.1, eta=0.1, s0=1e-2, b_max=1024):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not eta > 0:
            raise ValueError(f"eta (the test's η) must be positive, got {eta}")
        if not s0 > 0:
            raise ValueError(f"s0 (the accumulator's start) must be positive, got {s0}")
        if isinstance(b_max, bool) or not isinstance(b_max, int) or b_max < 1:
            raise ValueError(f"b_max must be a positive int (examples), got {b_max!r}")
        super().__init__(params, dict(lr=lr))
        self.eta, self.b_max = float(eta), b_max
        self.s_sq = float(s0) ** 2
        self.size = 0  # the largest batch asked for (or used) so far
        self.next_batch_size = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        grad_norm_sq = sum(float(p.grad.double().square().sum()) for p in params)
        sum_variance = sum(float(v.double().sum()) for v in self.gradient_variance)
        batch = int(self.batch_size_now)
        self.size = max(self.size, batch)
        self.size = norm_test(sum_variance, grad_norm_sq, batch, self.eta, self.size, self.b_max)
        self.s_sq += grad_norm_sq
        scale = 1.0 / math.sqrt(self.s_sq)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * scale)
        self.next_batch_size = self.size
        return loss


def make_optimizer(params, lr=0.1, eta=0.1, s0=1e-2, b_max=1024):
    return AdAdaGradNorm(params, lr=lr, eta=eta, s0=s0, b_max=b_max)
