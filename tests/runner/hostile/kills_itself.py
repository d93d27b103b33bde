# Kills its own process with SIGKILL, using almost no memory.
import os
import signal

os.kill(os.getpid(), signal.SIGKILL)
