"""diffGrad (Dubey et al., 2019), corrected.

Adam's moments and bias correction, with the step scaled elementwise by a friction coefficient
ξ_t = sigmoid(|g_{t−1} − g_t|) (g_0 = 0):

    θ ← θ − lr · ξ_t · m̂_t / (√v̂_t + eps)

The original diffGrad.py stored a reference to the gradient tensor instead of a copy, so once the
gradient is updated in place g_{t−1} and g_t are the same tensor and ξ stays 0.5 from step two on.
This version keeps a copy, which is what the paper describes.
"""

import torch


class DiffGradCorrected(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr <= 0.0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps <= 0.0:
            raise ValueError(f"eps must be positive, got {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("diffGrad does not support sparse gradients")
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["previous_grad"] = torch.zeros_like(p)  # g_0 = 0
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]

                friction = torch.sigmoid((state["previous_grad"] - grad).abs())
                state["previous_grad"] = grad.clone()  # a copy: the fix
                state["friction"] = friction

                denom = (exp_avg_sq / bias_correction2).sqrt().add_(group["eps"])
                p.addcdiv_(friction * exp_avg, denom, value=-group["lr"] / bias_correction1)
        return loss


def make_optimizer(params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    return DiffGradCorrected(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
