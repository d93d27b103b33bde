"""L-BFGS (Liu and Nocedal, 1989) as torch.optim.LBFGS, which needs a closure.

Its ``step(closure)`` requires the closure, so the runner passes one (docs/submissions.md,
"closure"): each call re-evaluates the loss and its gradient at the parameters L-BFGS has set (on
the training tasks, a forward and backward on the current batch), and every call counts against
the run's evaluations (at most 26 a step on average; torch's defaults use at most
⌊1.25 · max_iter⌋ = 25 a step). ``line_search_fn`` is None (a fixed step ``lr`` along the
quasi-Newton direction) or "strong_wolfe".
"""
import torch


def make_optimizer(params, lr=1.0, max_iter=20, history_size=100, line_search_fn=None):
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(f"line_search_fn must be null or \"strong_wolfe\", got {line_search_fn!r}")
    return torch.optim.LBFGS(params, lr=lr, max_iter=max_iter, history_size=history_size,
                             line_search_fn=line_search_fn)
