"""SGD with momentum (torch.optim.SGD, heavy-ball momentum)."""
import torch


def make_optimizer(params, lr=0.01, momentum=0.9, weight_decay=0.0, nesterov=False):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
