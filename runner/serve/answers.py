"""What the sandboxed model server (runner/sandboxed/model_server.py) may answer, as typed schemas:
the model server runs submitted code, so every frame is hostile until it fits one of these.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from runner.untrusted import Schema

MAX_INLINE_BYTES = 256 << 20  # an output that does not fit its slot comes inline, up to this
# The dtypes an output may have on the wire (numpy's names).
WIRE_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "float16": np.float16,
    "uint8": np.uint8,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}

Scalar = StrictStr | StrictBool | StrictInt | StrictFloat | None
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]
Dimension = Annotated[int, Field(ge=1)] | None


class ReadyFrame(Schema):
    """Sent once the model loaded; the fields the tracks read are typed, any other must be a
    plain value (kept in ``info`` for the result's environment)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    op: Literal["ready"]
    protocol: StrictInt = 0
    load_s: Seconds = 0.0
    inputs: Annotated[int, Field(ge=0, le=64)] = 1
    attributes: dict[StrictStr, Scalar] = {}
    providers: list[StrictStr] = []
    # What the artifact says about its inputs (runner/sandboxed/model_server.py): None for a dynamic
    # dimension, or for a format that keeps no shapes; the batch sizes the child fits batches to.
    input_shapes: Annotated[list[Annotated[list[Dimension], Field(max_length=8)] | None], Field(max_length=64)] | None = None
    input_dtypes: Annotated[list[Annotated[StrictStr, Field(max_length=32)] | None], Field(max_length=64)] = []
    batch_min: Annotated[int, Field(ge=1)] = 1
    batch_max: Annotated[int, Field(ge=1)] | None = None

    def info(self) -> dict[str, Any]:
        fixed = {name: getattr(self, name) for name in type(self).model_fields if name != "op"}
        extra = {k: v for k, v in (self.model_extra or {}).items()
                 if len(k) <= 64 and (v is None or isinstance(v, (str, bool, int, float)))}
        return {**extra, **fixed}


class OutFrame(Schema):
    """One batch's output: ``shape`` and ``dtype`` (a WIRE_DTYPES name) of ``nbytes`` bytes, in the
    batch's slot of shared memory (``shm``) or following the header (``inline``)."""

    op: Literal["out"]
    id: StrictInt
    shape: Annotated[list[Count], Field(max_length=8)]
    dtype: StrictStr
    where: Literal["shm", "inline"]
    nbytes: Count
    compute_s: Seconds = 0.0
    info: dict[StrictStr, Scalar] = {}


class BenchFrame(Schema):
    """The model's pure forward throughput, items per second, measured inside the sandbox."""

    op: Literal["bench"]
    items_per_s: Seconds
