"""Preparing the next batch while the model works on this one: :func:`prefetch` iterates in a
background thread, a few items ahead.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_DONE = object()


def prefetch(items: Iterable[Any], depth: int = 2, stop: threading.Event | None = None) -> Iterator[Any]:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead, so preparing the next batch
    (decoding, slicing) overlaps the model's work on this one. Exceptions surface here."""
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    halt = stop or threading.Event()
    failure: list[BaseException] = []

    def fill() -> None:
        try:
            for item in items:
                while not halt.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if halt.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            failure.append(exc)
        finally:
            while not halt.is_set():
                try:
                    buffer.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=fill, name="runner-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                if failure:
                    raise failure[0]
                return
            yield item
    finally:
        halt.set()
        thread.join(timeout=5)

