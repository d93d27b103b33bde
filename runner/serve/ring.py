"""The shared memory a model server's batches travel in: a memfd of SLOTS equal slots, each holding
one chunk's inputs and, after them, room for its output. While the child computes one slot the
parent fills the next.
"""
from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SLOTS = 2  # one batch computing in the child while the parent fills the next
ALIGN = 64  # every input and the output start at a multiple of this


@dataclass
class Chunk:
    """Items ``lo:hi`` of one batch (``inputs``: its arrays or tensors, batch first) and the
    caller's ``tag`` for that batch."""

    tag: Any
    lo: int
    hi: int
    inputs: list[Any]

    @property
    def size(self) -> int:
        return self.hi - self.lo


@dataclass
class Slot:
    """One slot of the ring: ``size`` bytes at ``offset``; the chunk in flight there and its frame id."""

    index: int
    offset: int = 0
    size: int = 0
    chunk: Chunk | None = None
    ident: int = 0
    out_offset: int = 0
    out_capacity: int = 0


@dataclass
class Ring:
    """SLOTS slots of ``slot_bytes`` each in one memfd (``fd``, mapped as ``region``)."""

    fd: int
    region: mmap.mmap
    slot_bytes: int
    slots: list[Slot] = field(default_factory=list)

    @classmethod
    def create(cls, slot_bytes: int) -> Ring:
        """A ring with at least ``slot_bytes`` per slot (rounded up to whole pages)."""
        size = (slot_bytes + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        fd = os.memfd_create("runner-model-ring", os.MFD_CLOEXEC)
        os.ftruncate(fd, size * SLOTS)
        region = mmap.mmap(fd, size * SLOTS)
        return cls(fd, region, size, [Slot(i, i * size, size) for i in range(SLOTS)])

    @property
    def nbytes(self) -> int:
        return self.slot_bytes * len(self.slots)

    def free_slot(self) -> Slot:
        return next(s for s in self.slots if s.chunk is None)

    def fill(self, slot: Slot, parts: list[Any]) -> list[dict[str, Any]]:
        """Copy ``parts`` (one chunk's inputs) into ``slot`` and set where its output may go;
        returns their descriptions for the ``run`` frame."""
        offset = slot.offset
        described = []
        for part in parts:
            described.append(write_input(self.region, offset, part))
            offset += (nbytes(part) + ALIGN - 1) // ALIGN * ALIGN
        slot.out_offset = (offset + ALIGN - 1) // ALIGN * ALIGN
        slot.out_capacity = slot.offset + slot.size - slot.out_offset
        return described

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.region.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


# --------------------------------------------------------------------------------------------
# Input encoding.
# --------------------------------------------------------------------------------------------
def as_inputs(inputs: Any) -> list[Any]:
    """A batch's inputs as a list: one array or tensor becomes a list of one."""
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def nbytes(value: Any) -> int:
    """The bytes of a numpy array or torch tensor."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    return int(value.numel() * value.element_size())  # a torch tensor


def quantized_uint8(tensor: Any) -> Any | None:
    """A GPU batch whose values are exactly k/255 travels as uint8 (a quarter of the bytes); the
    child divides by 255 in float32 and gets the same values back. None when it is not exact."""
    import torch

    if tensor.dtype != torch.float32:
        return None
    q = tensor.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return q if torch.equal(q.float().div_(255.0), tensor) else None


def write_input(region: mmap.mmap, offset: int, value: Any) -> dict[str, Any]:
    """Copy one input into shared memory at ``offset``; returns its description for the child."""
    scale = None
    if not isinstance(value, np.ndarray):  # a torch tensor, possibly on the GPU
        import torch

        if value.is_cuda:
            quantized = quantized_uint8(value)
            if quantized is not None:
                value, scale = quantized, 255.0
        if value.dtype not in (torch.float32, torch.uint8):
            value = value.float()
        target = np.ndarray(
            tuple(value.shape),
            dtype=np.uint8 if value.dtype == torch.uint8 else np.float32,
            buffer=region,
            offset=offset,
        )
        torch.from_numpy(target).copy_(value)
        dtype, shape = str(target.dtype), list(target.shape)
    else:
        source = value if value.dtype in (np.float32, np.uint8) else value.astype(np.float32)
        target = np.ndarray(source.shape, dtype=source.dtype, buffer=region, offset=offset)
        np.copyto(target, source)
        dtype, shape = str(target.dtype), list(target.shape)
    del target
    return {"offset": offset, "shape": shape, "dtype": dtype, "scale": scale}


def item_range(value: Any, lo: int, hi: int) -> Any:
    """Items ``lo:hi`` of ``value`` (batch first), a view where numpy or torch gives one."""
    return value[lo:hi]
