"""The next_batch_size hook (docs/submissions.md): SGD whose batch grows geometrically, the shape
of adaptive batch-size schemes such as AdAdaGrad (shared/PROTOCOLS.md), with a fixed schedule
in place of their variance test.

The class says ``wants_next_batch_size = True``; after every step the runner reads
``self.next_batch_size`` (an int within the task's bounds, opt-digits 8..1024; None keeps the
size) and draws the next batch at that size. The budget is counted in samples (epochs × the
training split's size), so larger batches mean fewer steps, not more data.
"""
import torch


class GrowingBatchSGD(torch.optim.SGD):
    wants_next_batch_size = True

    def __init__(self, params, lr=0.05, momentum=0.9, start=16, grow_every=20, factor=2, max_batch=256):
        super().__init__(params, lr=lr, momentum=momentum)
        self.size, self.grow_every, self.factor, self.max_batch = start, grow_every, factor, max_batch
        self.count = 0
        self.next_batch_size = start

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        self.count += 1
        if self.count % self.grow_every == 0:
            self.size = min(self.max_batch, self.size * self.factor)
        self.next_batch_size = self.size
        return loss


def make_optimizer(params, lr=0.05, momentum=0.9, start=16, grow_every=20, factor=2, max_batch=256):
    return GrowingBatchSGD(params, lr=lr, momentum=momentum, start=start, grow_every=grow_every, factor=factor,
                           max_batch=max_batch)
