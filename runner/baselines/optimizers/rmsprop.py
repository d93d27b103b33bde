"""RMSProp (Tieleman and Hinton, 2012) as torch.optim.RMSprop."""
import torch


def make_optimizer(params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0):
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
