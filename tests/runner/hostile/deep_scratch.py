# Leaves its scratch folder 3,000 folders deep (paths past PATH_MAX, deeper than Python's recursion
# limit), with a file at the bottom, and a socket, a FIFO, a symbolic link and folders without
# permissions on the way; then optimizes correctly.
import os
import socket

import torch

top = os.getcwd()
for level in range(3000):
    os.mkdir("d")
    os.chdir("d")
    if level in (10, 2000):
        socket.socket(socket.AF_UNIX).bind("sock")
        os.mkfifo("fifo")
        os.symlink("/proc/self/root", "link")
with open("bottom.bin", "wb") as fh:
    fh.write(os.urandom(1 << 20))
os.mkdir("locked")
os.mkdir("locked/inner")
os.chmod("locked/inner", 0)
os.chmod("locked", 0o500)
os.chdir(top)
os.mkdir("readonly")
open("readonly/file", "w").close()
os.chmod("readonly", 0o500)


def make_optimizer(params, lr=0.1):
    return torch.optim.SGD(params, lr=lr)
