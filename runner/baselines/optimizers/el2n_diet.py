"""An EL2N data diet (Paul, Ganguli, Dziugaite, "Deep Learning on a Data Diet: Finding Important
Examples Early in Training", NeurIPS 2021, arXiv 2107.07075; shared/PROTOCOLS.md, "EL2N and
GraNd"): SGD with momentum that scores every training example early in training and trains on the
highest-scoring fraction for the rest of its budget.

EL2N(x, y) = ‖softmax(f_w(x)) − onehot(y)‖₂ at the current weights w. Schedule: the first
``score_after`` steps train on everything; the runner then scores every example (after step
``score_after``; with ``score_after = 0`` the first step only asks and leaves the weights as they
are, so the scores are at initialization); from the next step on only the kept examples are
drawn. Kept: the examples ranked ``offset``·n + 1 to (``offset`` + ``keep``)·n by descending score
(the code's ``keep_max_scores``, global, not per class; ``offset`` also drops the very hardest,
for noisy labels), at least one. Ties in score keep the lower index.

Adaptations, recorded here: one run's scores at the weights of this very run, not the paper's
mean over ≥ 10 independent runs; training continues from those weights on the kept examples
instead of restarting from scratch, so the pruned run has the same sample budget as any other.

The runner's hook (docs/submissions.md, ``el2n_scores``): setting ``self.request_scores = True``
in a step makes the runner write the scores (float32 [n_train], training-split order) into
``self.el2n_scores`` after that step, at a cost of n_train samples of the budget; the optimizer
writes ``self.selection`` (float32 [n_train], nonzero = draw it), read at each new order.
"""
import torch


def keep_highest(scores, keep, offset=0.0):
    """A float32 0/1 mask over ``scores`` [n]: 1 on the examples ranked ⌊offset·n⌋ + 1 to
    ⌊offset·n⌋ + max(1, ⌊keep·n⌋) by descending score (stable: ties keep the lower index)."""
    n = scores.numel()
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    start = min(n - 1, int(offset * n))
    kept = order[start:start + max(1, int(keep * n))]
    mask = torch.zeros(n, dtype=torch.float32)
    mask[kept] = 1.0
    return mask


class El2nDietSGD(torch.optim.SGD):
    wants_el2n_scores = True

    def __init__(self, params, lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.0, score_after=42,
                 keep=0.5, offset=0.0):
        if isinstance(score_after, bool) or not isinstance(score_after, int) or score_after < 0:
            raise ValueError(f"score_after must be an int >= 0 (steps), got {score_after!r}")
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep (the fraction kept) must lie in (0, 1], got {keep}")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"offset (the hardest fraction dropped) must lie in [0, 1), got {offset}")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        self.score_after, self.keep, self.offset = score_after, float(keep), float(offset)
        self.count = 0
        self.pruned = False

    @torch.no_grad()
    def step(self, closure=None):
        self.count += 1
        asking = max(1, self.score_after)
        if self.count == asking:
            self.request_scores = True  # scored after this step, in place before the next
            if self.score_after == 0:
                return None  # scores at initialization: this step leaves the weights as they are
        elif self.count == asking + 1:
            self.selection.copy_(keep_highest(self.el2n_scores, self.keep, self.offset))
            self.pruned = True
        return super().step(closure)


def make_optimizer(params, lr=0.05, momentum=0.9, nesterov=False, weight_decay=0.0, score_after=42, keep=0.5,
                   offset=0.0):
    return El2nDietSGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                       score_after=score_after, keep=keep, offset=offset)
