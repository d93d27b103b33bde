"""The first_layer_stats hook (docs/submissions.md): SGD with momentum whose first-layer weight
gradient is TrAct's, G (XᵀX / b + λ I)⁻¹ (shared/PROTOCOLS.md, "TrAct").

The runner writes XᵀX / b (float32, n × n, n = C_in·k·k) of the current batch's first-layer input
patches into ``self.first_layer_stats`` before every step, because the class says
``wants_first_layer_stats = True``. The first layer's weight is the first parameter (the models
list it first); its gradient is reshaped to out × n, transformed, and stepped as usual.
"""
import torch


class TrActSGD(torch.optim.SGD):
    wants_first_layer_stats = True

    def __init__(self, params, lr=0.01, momentum=0.9, lam=0.1):
        super().__init__(params, lr=lr, momentum=momentum)
        self.lam = lam

    @torch.no_grad()
    def step(self, closure=None):
        weight = self.param_groups[0]["params"][0]
        stats = self.first_layer_stats.double()
        inverse = torch.linalg.inv(stats + self.lam * torch.eye(stats.shape[0], dtype=stats.dtype))
        gradient = weight.grad.reshape(weight.shape[0], -1).double() @ inverse
        weight.grad.copy_(gradient.reshape(weight.shape).to(weight.grad.dtype))
        return super().step(closure)


def make_optimizer(params, lr=0.01, momentum=0.9, lam=0.1):
    return TrActSGD(params, lr=lr, momentum=momentum, lam=lam)
