"""The grand_scores hook (docs/submissions.md): SGD with momentum that asks the runner, at
initialization, for every training example's GraNd score ‖∇_w CE(f_w(x), y)‖₂ (over all
parameters) and trains only on the highest-scoring fraction (Paul et al.'s data diet;
shared/PROTOCOLS.md, "EL2N and GraNd").

The class says ``wants_grand_scores = True``. Setting ``self.request_scores = True`` in a step
makes the runner score all n_train examples after that step (per-example gradients, counted as
n_train samples of the budget) into ``self.grand_scores`` (float32 [n_train]); the optimizer then
writes ``self.selection`` (float32 [n_train], nonzero = draw it), which the runner reads each time
it draws a new order. Here the first step only asks, and leaves the weights as they are, so the
scores are those of the initial weights, as in the paper. The optimizer never sees an image or a
label.
"""
import torch


class GrandPruneSGD(torch.optim.SGD):
    wants_grand_scores = True

    def __init__(self, params, lr=0.05, momentum=0.9, keep=0.5):
        super().__init__(params, lr=lr, momentum=momentum)
        self.keep = keep
        self.count = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.count += 1
        if self.count == 1:
            self.request_scores = True  # scored after this step, at the weights it leaves
            return None  # ... which are the initial ones
        if self.count == 2:
            scores = self.grand_scores
            kept = max(1, int(self.keep * scores.numel()))
            self.selection.zero_()
            self.selection[torch.topk(scores, kept).indices] = 1.0
        return super().step(closure)


def make_optimizer(params, lr=0.05, momentum=0.9, keep=0.5):
    return GrandPruneSGD(params, lr=lr, momentum=momentum, keep=keep)
