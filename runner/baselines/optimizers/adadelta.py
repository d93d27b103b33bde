"""AdaDelta (Zeiler, 2012) as torch.optim.Adadelta."""
import torch


def make_optimizer(params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    return torch.optim.Adadelta(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
