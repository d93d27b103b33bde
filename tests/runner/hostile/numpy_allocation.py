# Asks numpy for 64 GiB, past the sandbox's address-space limit.
import numpy as np
import torch


def make_optimizer(params, lr=0.1):
    buffer = np.ones(8 << 30, dtype=np.float64)
    return torch.optim.SGD(params, lr=lr + float(buffer[0]) * 0)
