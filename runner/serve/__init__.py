"""The runner's side of the sandboxed model server (the program is
runner/sandboxed/model_server.py, whose docstring holds the protocol), by concern:

- server.py: :class:`ModelServer`, one sandboxed model server: start, stream batches, stop;
  :class:`StreamStats`, what one stream did.
- pool.py: warm servers, :data:`POOL` (one per worker process) and :class:`ServerPool`.
- settings.py: :class:`ServerSettings` (what a server is started with, the key of a warm one) and
  the defaults the environment sets (:func:`default_memory_bytes`, :func:`default_threads`).
- ring.py: the shared-memory ring batches travel in, and how an input is written there.
- frames.py: length-prefixed JSON frames over the socket, size-capped and parsed as hostile.
- answers.py: what the model server may answer, as typed schemas.
- prefetch.py: :func:`prefetch`, preparing the next batch while the model works on this one.

The tracks and the benches import the names below from ``runner.serve``.
"""
from __future__ import annotations

from runner.serve.pool import POOL, ServerPool
from runner.serve.prefetch import prefetch
from runner.serve.ring import as_inputs
from runner.serve.server import ModelServer, StreamStats
from runner.serve.settings import ServerSettings, default_memory_bytes, default_threads

__all__ = ["POOL", "ModelServer", "ServerPool", "ServerSettings", "StreamStats", "as_inputs", "default_memory_bytes",
           "default_threads", "prefetch"]
