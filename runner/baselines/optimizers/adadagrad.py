"""AdAdaGrad: coordinate-wise AdaGrad whose batch grows by the coordinate-wise test (Lau, Liu,
Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods", arXiv 2402.11215;
shared/PROTOCOLS.md, "AdAdaGrad / AdAdaGradNorm").

Step (AdaGrad, one accumulator per coordinate, s_0 = ``s0`` on every coordinate):

    s_j² ← s_j² + ḡ_j²,    θ_j ← θ_j − lr · ḡ_j / s_j

Coordinate-wise test, after each step, on the batch that step used (size b_k, mean gradient ḡ,
unbiased per-coordinate variance V_j of its per-sample gradients): keep b_k when
V_j / b_k ≤ η² ḡ_j² for every coordinate j, else

    b_{k+1} = max_j ⌈V_j / (η² ḡ_j²)⌉

over the coordinates with ḡ_j ≠ 0 (the paper's rule; coordinates with ḡ_j = 0 are skipped, as
PROTOCOLS records: the authors' code has no coordinate-wise test). Batches only grow and stop at
``b_max``; no test is run once there. η (``eta``) defaults to 0.1, the authors' code's. The test
is demanding: one coordinate with a tiny mean and some variance asks for a large batch.

Where the numbers come from: the runner's hooks (docs/submissions.md). ``wants_gradient_variance``:
before every step ``self.gradient_variance`` holds V (float32 tensors shaped like the params) and
``self.batch_size_now`` the batch's size b_k; ``p.grad`` is ḡ. ``wants_next_batch_size``: after
the step the runner draws the next batch at ``self.next_batch_size``. The first batch is the
task's own (opt-digits: 64).

The cap: an optimizer is not told the task's batch bounds, so ``b_max`` is a hyperparameter,
set per board to the task's upper bound (opt-digits 1,024; runner/tracks/training/tasks.py); a
larger value is caught by the runner's bound check as wrong_output. The last batch of a budget
may be cut short by the runner: the test starts from the largest size asked so far, never from a
cut batch, so sizes never shrink.
"""
import math

import torch


def coordinate_test(variance, mean, batch, eta, current, b_max):
    """The next batch size by the coordinate-wise test: ``current`` (the largest size asked so
    far, in examples) while V_j / b ≤ η² ḡ_j² for every j with ḡ_j ≠ 0, else
    max_j ⌈V_j / (η² ḡ_j²)⌉; never below ``current``, never above ``b_max``. ``variance`` and
    ``mean`` are lists of tensors (V and ḡ per parameter), ``batch`` the size b they came from."""
    if current >= b_max:
        return b_max
    wanted = 0.0
    for v, g in zip(variance, mean, strict=True):
        g2 = g.double().square()
        ratio = v.double()[g2 > 0] / (eta * eta * g2[g2 > 0])
        if ratio.numel():
            wanted = max(wanted, float(ratio.max()))
    if wanted <= batch:  # V_j / b ≤ η² ḡ_j² everywhere
        return current
    if not math.isfinite(wanted):
        return b_max
    return min(b_max, max(current, math.ceil(wanted)))


class AdAdaGrad(torch.optim.Optimizer):
    wants_gradient_variance = True
    wants_next_batch_size = True

    def __init__(self, params, lr=0.1, eta=0.1, s0=1e-2, b_max=1024):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not eta > 0:
            raise ValueError(f"eta (the test's η) must be positive, got {eta}")
        if not s0 > 0:
            raise ValueError(f"s0 (the accumulators' start) must be positive, got {s0}")
        if isinstance(b_max, bool) or not isinstance(b_max, int) or b_max < 1:
            raise ValueError(f"b_max must be a positive int (examples), got {b_max!r}")
        super().__init__(params, dict(lr=lr))
        self.eta, self.s0, self.b_max = float(eta), float(s0), b_max
        self.size = 0  # the largest batch asked for (or used) so far
        self.next_batch_size = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"]]
        batch = int(self.batch_size_now)
        self.size = max(self.size, batch)
        if self.size < self.b_max:  # the test reads ḡ before the step changes anything
            zeros = [torch.zeros_like(p) for p in params]
            mean = [p.grad if p.grad is not None else z for p, z in zip(params, zeros, strict=True)]
            self.size = coordinate_test(self.gradient_variance, mean, batch, self.eta, self.size, self.b_max)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum_sq"] = torch.full_like(p, self.s0 * self.s0)
                state["sum_sq"].addcmul_(p.grad, p.grad)
                p.addcdiv_(p.grad, state["sum_sq"].sqrt(), value=-group["lr"])
        self.next_batch_size = self.size
        return loss


def make_optimizer(params, lr=0.1, eta=0.1, s0=1e-2, b_max=1024):
    return AdAdaGrad(params, lr=lr, eta=eta, s0=s0, b_max=b_max)
