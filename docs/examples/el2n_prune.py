"""The el2n_scores hook (docs/submissions.md): SGD with momentum that, a few steps in, asks the
runner for every training example's EL2N score ‖softmax(f(x)) − onehot(y)‖₂ and from then on
trains only on the hardest fraction (Paul et al.'s data diet; shared/PROTOCOLS.md, "EL2N").

The class says ``wants_el2n_scores = True``. Setting ``self.request_scores = True`` in a step
makes the runner score all n_train examples after that step (n_train forward passes, counted
against the sample budget) into ``self.el2n_scores`` (float32 [n_train]); the optimizer then
writes ``self.selection`` (float32 [n_train], nonzero = draw it), which the runner reads each
time it draws a new order. The optimizer never sees an image or a label.
"""
import torch


class El2nPruneSGD(torch.optim.SGD):
    wants_el2n_scores = True

    def __init__(self, params, lr=0.05, momentum=0.9, score_after=20, keep=0.5):
        super().__init__(params, lr=lr, momentum=momentum)
        self.score_after, self.keep = score_after, keep
        self.count = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.count += 1
        if self.count == self.score_after:
            self.request_scores = True  # scored after this step, in place before the next
        elif self.count == self.score_after + 1:
            scores = self.el2n_scores
            kept = max(1, int(self.keep * scores.numel()))
            self.selection.zero_()
            self.selection[torch.topk(scores, kept).indices] = 1.0
        return super().step(closure)


def make_optimizer(params, lr=0.05, momentum=0.9, score_after=20, keep=0.5):
    return El2nPruneSGD(params, lr=lr, momentum=momentum, score_after=score_after, keep=keep)
