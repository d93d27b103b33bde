"""AdamW (Loshchilov and Hutter, 2019): Adam with decoupled weight decay."""
import torch


def make_optimizer(params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
