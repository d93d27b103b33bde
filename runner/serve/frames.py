"""Frames between the runner and a sandboxed program, from the runner's side.

A frame is runner/sandboxed/rules.py's: a little-endian u32 length, then that many bytes of a
JSON object (the header), sometimes followed by raw bytes the header announces. The program on the
other end runs submitted code, so every frame it sends is hostile: :class:`FrameChannel` caps its
size, parses it with runner/untrusted.py's capped JSON parser and refuses anything but an object.
What a header may hold is the caller's schema.
"""
from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from runner.sandboxed.rules import FRAME_LENGTH, MAX_HEADER_BYTES
from runner.untrusted import load_json, tampered

POLL_S = 0.2  # how often a wait for the program wakes to check its deadline, cancellation and life


class PeerGone(Exception):
    """The program closed its end of the socket, or the socket failed."""


class FrameChannel:
    """Frames over one connected AF_UNIX stream socket. ``what`` names the program's answers in
    messages ("the model server's answer"); headers over ``max_header_bytes`` are refused.

    Reading waits in steps of ``poll_s`` seconds and calls ``waiting()`` between them: it raises to
    stop waiting (a deadline passed, the job was cancelled, the program died)."""

    def __init__(self, sock: socket.socket, *, what: str, max_header_bytes: int = MAX_HEADER_BYTES,
                 poll_s: float = POLL_S):
        self.sock = sock
        self.what = what
        self.max_header_bytes = max_header_bytes
        self.poll_s = poll_s
        self.buffer = bytearray()
        sock.settimeout(poll_s)

    def send(self, header: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
        """Send ``header`` as one frame, with ``fds`` attached (SCM_RIGHTS). Raises PeerGone."""
        head = json.dumps(header, separators=(",", ":")).encode()
        data = FRAME_LENGTH.pack(len(head)) + head
        self.sock.settimeout(None)
        try:
            if fds:
                sent = socket.send_fds(self.sock, [data], list(fds))
                if sent < len(data):
                    self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)
        except OSError as exc:
            raise PeerGone(str(exc)) from exc
        finally:
            self.sock.settimeout(self.poll_s)

    def _fill(self, size: int, waiting: Callable[[], None]) -> None:
        while len(self.buffer) < size:
            try:
                chunk = self.sock.recv(max(65536, min(size - len(self.buffer), 16 << 20)))
            except TimeoutError:
                waiting()
                continue
            except OSError as exc:
                raise PeerGone(str(exc)) from exc
            if not chunk:
                raise PeerGone("the program closed the connection")
            self.buffer += chunk

    def receive(self, waiting: Callable[[], None]) -> dict[str, Any]:
        """The next frame's header, a JSON object. Raises PeerGone, whatever ``waiting`` raises,
        and EvaluationError(WRONG_OUTPUT) for a header over the size limit, not JSON, or not an
        object."""
        self._fill(FRAME_LENGTH.size, waiting)
        (size,) = FRAME_LENGTH.unpack_from(self.buffer)
        if size > self.max_header_bytes:
            raise tampered(self.what, f"a frame of {size} bytes, over the limit of {self.max_header_bytes}")
        self._fill(FRAME_LENGTH.size + size, waiting)
        header = load_json(bytes(self.buffer[FRAME_LENGTH.size:FRAME_LENGTH.size + size]), what=self.what,
                           max_bytes=self.max_header_bytes)
        if not isinstance(header, dict):
            raise tampered(self.what, "not a JSON object")
        del self.buffer[:FRAME_LENGTH.size + size]
        return header

    def receive_bytes(self, nbytes: int, waiting: Callable[[], None]) -> bytes:
        """The ``nbytes`` raw bytes that follow a header announcing them. Raises PeerGone."""
        self._fill(nbytes, waiting)
        payload = bytes(self.buffer[:nbytes])
        del self.buffer[:nbytes]
        return payload

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
