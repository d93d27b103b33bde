"""SGD with coordinate-wise clipping (Pan and Li, "Toward Understanding Why Adam Converges Faster
Than SGD for Transformers", arXiv 2306.00204, Alg. 1; shared/PROTOCOLS.md, "Coordinate-wise
clipping").

Before each step all d gradient entries of the model form one vector g. With c the fraction to
clip (``c``) and s the threshold scale (``threshold_scale``, 1):

    τ = the (⌊c·d⌋ + 1)-th largest |g_j|,    g_j ← sign(g_j) · min(|g_j|, s·τ)

so the top ⌊c·d⌋ coordinates are cut to the size of the next one. The clipped gradient then feeds
torch.optim.SGD (heavy-ball momentum: clip before momentum, as Alg. 1). c = 0 leaves the gradient
as it is; c ≥ 1 would make τ the smallest |g_j| over no coordinates (the code's τ = 0: no step at
all) and is refused, as is c < 0 (both raise ValueError, reported as bad_hyperparameters). The
authors' momentum is m ← βm + (1−β)g, so their learning rates are 1/(1−β) = 10× torch SGD's.
"""
import math

import torch


def clip_coordinates(grads, fraction, scale=1.0):
    """Clip the gradients ``grads`` (a list of tensors, changed in place) to s·τ coordinate-wise,
    τ the (⌊fraction·d⌋ + 1)-th largest absolute entry over all d entries; returns τ (a float,
    gradient units; 0.0 when there are no entries)."""
    magnitudes = torch.cat([g.detach().reshape(-1).abs() for g in grads]) if grads else torch.zeros(0)
    d = magnitudes.numel()
    if d == 0:
        return 0.0
    rank = math.floor(fraction * d) + 1  # the rank-th largest is the (d − rank + 1)-th smallest
    tau = float(torch.kthvalue(magnitudes.double(), d - rank + 1).values)
    bound = scale * tau
    for g in grads:
        g.clamp_(-bound, bound)
    return tau


class ClippedSGD(torch.optim.SGD):
    """torch.optim.SGD on the coordinate-wise clipped gradient (clip before momentum)."""

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0, c=0.1, threshold_scale=1.0):
        if not 0.0 <= c < 1.0:
            raise ValueError(f"c (the fraction of coordinates clipped) must lie in [0, 1), got {c}: "
                             "c >= 1 would clip every coordinate to 0")
        if not threshold_scale > 0:
            raise ValueError(f"threshold_scale must be positive, got {threshold_scale}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.c, self.threshold_scale = float(c), float(threshold_scale)
        self.tau = None  # the last step's threshold

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.tau = clip_coordinates(grads, self.c, self.threshold_scale)
        super().step()
        return loss


def make_optimizer(params, lr=0.01, momentum=0.9, weight_decay=0.0, c=0.1, threshold_scale=1.0):
    return ClippedSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, c=c,
                      threshold_scale=threshold_scale)
