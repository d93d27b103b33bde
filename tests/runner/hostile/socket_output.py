# Makes the child leave a listening unix socket where its result document should be.
import os
import socket

import torch

_replace = os.replace
_keep = []


def _bind_instead(source, destination):
    os.unlink(source)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(destination)
    listener.listen(1)
    _keep.append(listener)


os.replace = _bind_instead


def make_optimizer(params, lr=0.1):
    return torch.optim.SGD(params, lr=lr)
