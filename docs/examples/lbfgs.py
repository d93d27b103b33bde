"""A closure (docs/submissions.md): torch's L-BFGS, whose step(closure) re-evaluates the loss.

Every call of the closure is a forward and backward the runner runs on the current batch at the
parameters the optimizer set, counted against the run's evaluations (env.evaluations).
"""
import torch


def make_optimizer(params, lr=0.1, max_iter=4):
    return torch.optim.LBFGS(params, lr=lr, max_iter=max_iter)
