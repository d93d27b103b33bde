# Asks torch for 64 GiB on the CPU, past the sandbox's address-space limit.
import torch


def make_optimizer(params, lr=0.1):
    buffer = torch.empty(16 << 30, dtype=torch.float32)
    return torch.optim.SGD(params, lr=lr + float(buffer[0]) * 0)
