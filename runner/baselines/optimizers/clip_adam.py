"""Adam with coordinate-wise clipping (Pan and Li, "Toward Understanding Why Adam Converges Faster
Than SGD for Transformers", arXiv 2306.00204; shared/PROTOCOLS.md, "Coordinate-wise clipping").

Before each step all d gradient entries of the model form one vector g. With c the fraction to
clip (``c``) and s the threshold scale (``threshold_scale``, 1):

    τ = the (⌊c·d⌋ + 1)-th largest |g_j|,    ĝ_j = sign(g_j) · min(|g_j|, s·τ)

The clipped ĝ feeds the first moment and the raw g the second (the authors' clipped Adam):

    m ← β1 m + (1 − β1) ĝ,   v ← β2 v + (1 − β2) g²,
    θ ← θ − lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)

c = 0 is Adam exactly; c ≥ 1 (τ = 0, no step) and c < 0 are refused with ValueError (reported as
bad_hyperparameters). The code's optional ``clip_update`` (clipping the final update too) is
not done here.
"""
import math

import torch


def clip_coordinates(grads, fraction, scale=1.0):
    """Coordinate-wise clipped copies of ``grads`` (a list of tensors, left as they are), cut at
    s·τ, τ the (⌊fraction·d⌋ + 1)-th largest absolute entry over all d entries; returns (the
    copies, τ as a float in gradient units)."""
    magnitudes = torch.cat([g.detach().reshape(-1).abs() for g in grads]) if grads else torch.zeros(0)
    d = magnitudes.numel()
    if d == 0:
        return [], 0.0
    rank = math.floor(fraction * d) + 1  # the rank-th largest is the (d − rank + 1)-th smallest
    tau = float(torch.kthvalue(magnitudes.double(), d - rank + 1).values)
    bound = scale * tau
    return [g.clamp(-bound, bound) for g in grads], tau


class ClippedAdam(torch.optim.Optimizer):
    """Adam whose first moment sees the coordinate-wise clipped gradient, the second the raw one."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, c=0.1, threshold_scale=1.0):
        if not 0.0 <= c < 1.0:
            raise ValueError(f"c (the fraction of coordinates clipped) must lie in [0, 1), got {c}: "
                             "c >= 1 would clip every coordinate to 0")
        if not threshold_scale > 0:
            raise ValueError(f"threshold_scale must be positive, got {threshold_scale}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))
        self.c, self.threshold_scale = float(c), float(threshold_scale)
        self.tau = None  # the last step's threshold

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        clipped, self.tau = clip_coordinates([p.grad for p in params], self.c, self.threshold_scale)
        clipped_of = {id(p): g for p, g in zip(params, clipped, strict=True)}
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(clipped_of[id(p)], alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                bias1 = 1 - beta1 ** state["step"]
                bias2 = 1 - beta2 ** state["step"]
                denom = (state["exp_avg_sq"] / bias2).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / bias1)
        return loss


def make_optimizer(params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, c=0.1, threshold_scale=1.0):
    return ClippedAdam(params, lr=lr, betas=(beta1, beta2), eps=eps, c=c, threshold_scale=threshold_scale)
