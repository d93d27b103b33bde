"""The sandboxed model server: loads one submitted model ONCE and answers batches from the trusted
parent (runner/serve/) until told to stop.

    python -I model_server.py --artifact FILE --format torchscript|pt2|onnx|safetensors --socket PATH \
        --device cpu|cuda[:N] [--precision fp32|bf16] [--channels-last auto|on|off] [--threads N] \
        [--architecture JSON [--published FILE]]

A ``safetensors`` artifact is weights only: ``--architecture`` (runner.architectures'
ArchitectureSpec as JSON, checked by the runner) names the library architecture that
library_models.py, bound beside this file, builds and loads them into; ``--published`` is the
library's published weights the runner fetched, for ``"pretrained": true``.

Self-contained (standard library, numpy, torch, onnxruntime, and for a safetensors artifact
torchvision, timm and safetensors; never another runner module): it is bound into the sandbox
with only rules.py and library_models.py beside it (runner/sandboxed/__init__.py). The parent has
already sniffed the format by content and refused pickles; this program never unpickles anything
either (TORCH_FORCE_WEIGHTS_ONLY_LOAD is set before torch is imported, so even torch.export.load's
fallback cannot unpickle arbitrary objects).

Protocol (version 1) over the AF_UNIX stream socket the parent listens on (the child connects):
every message is a frame ``<u32 little-endian n><n bytes of JSON header>`` optionally followed by
``header["nbytes"]`` raw bytes. Input data travels in shared memory: a memfd the parent creates,
sends with SCM_RIGHTS in a ``map`` frame, and divides into slots (inputs, then room for outputs).

parent → child
  {"op": "map", "size": S}                        + one fd: the shared-memory region (replaces the last)
  {"op": "run", "id": k, "inputs": [{"offset", "shape", "dtype": "float32"|"uint8", "scale"}],
   "out_offset": o, "out_capacity": c}           run the model on the inputs found at those offsets;
                                                  uint8 inputs become float32 / scale on the device
  {"op": "bench", "shapes": [[N, C, H, W], ...], "iters": n, "warmup": w}
                                                  time the pure forward pass on resident random input
  {"op": "saliency", "id": k, "inputs", "out_offset", "out_capacity", "method", ...}
                                                  saliency maps of those images, answered with an
                                                  "out" frame of uint8 maps (saliency_server.py)
  {"op": "exit"}
child → parent
  {"op": "ready", "format", "device", "device_name", "precision", "memory_format", "inputs",
   "attributes", "torch", "onnxruntime", "providers", "load_s",
   "input_shapes", "input_dtypes", "batch_min", "batch_max"}            once, after loading
                                                  input_shapes: one list per input, null for a
                                                  dynamic dimension, or null when the format does
                                                  not say (TorchScript); batch_min/batch_max: the
                                                  batch sizes the model accepts (equal for a fixed
                                                  batch; batch_max null when unbounded). The child
                                                  splits and pads every batch to fit them.
  {"op": "out", "id": k, "shape", "dtype", "where": "shm"|"inline", "nbytes", "compute_s", "info"}
                                                  the output: at out_offset when it fits, else inline
  {"op": "error", "id": k|null, "kind", "message", "retry": bool}
                                                  kind is a user error kind, named in rules.py
                                                  (tests/runner/test_contract.py checks every kind
                                                  this file can send); retry is true for
                                                  out-of-memory, which the parent answers with a
                                                  smaller batch
  {"op": "bench", "items_per_s", "seconds", "iters"}

The child only computes. The parent validates shapes, dtypes and finiteness and computes every
metric; nothing the child says is trusted beyond being data.

One piece past 450 lines: it is the program the sandbox runs, and its three formats' loaders share
the device, precision, memory-format and batch-fitting code; every file split off would be one
more file bound beside it.
"""

from __future__ import annotations

import argparse
import array
import json
import mmap
import os
import socket
import sys
import time
import warnings
from typing import Any

if __package__:  # imported by the runner
    from runner.sandboxed import library_models, rules
else:  # in the sandbox: rules.py is bound beside this file (runner/sandboxed/__init__.py)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import library_models
    import rules

PROTOCOL = 1
FRAME_LENGTH = rules.FRAME_LENGTH
MAX_HEADER_BYTES = rules.MAX_HEADER_BYTES
ChildError = rules.ChildError
is_out_of_memory = rules.is_out_of_memory

PRECISIONS = ("fp32", "bf16")
CHANNELS_LAST = ("auto", "on", "off")
WIRE_DTYPES = ("float32", "uint8")
# The ONNX input types the child feeds (float32 pixels cast to the graph's type); others refused.
ONNX_INPUT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def describe(exc: BaseException, limit: int = 1500) -> str:
    """``Type: message``, keeping the end of long messages (TorchScript puts the cause last)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) > limit:
        text = text[:200] + " … " + text[-(limit - 200) :]
    return text


_LOW_PRECISION_MISSING = ("not implemented for 'half'", "not implemented for 'bfloat16'",
                          "low precision dtypes not supported")


def batch_pieces(n: int, low: int = 1, high: int | None = None) -> list[tuple[int, int, int]]:
    """``(start, stop, pad)`` pieces covering items ``0:n`` so that every call the model gets has
    between ``low`` and ``high`` items: at most ``high`` real items each, the last padded with
    ``pad`` copies of its last item up to ``low`` (a fixed batch is ``low == high``).

    >>> batch_pieces(194, 64, 64)
    [(0, 64, 0), (64, 128, 0), (128, 192, 0), (192, 194, 62)]
    """
    low = max(1, low)
    step = max(low, high) if high else max(n, 1)
    pieces = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        pieces.append((start, stop, max(0, low - (stop - start))))
    return pieces


def _pad(value: Any, pad: int) -> Any:
    """``value`` (numpy or torch, batch first) with ``pad`` copies of its last item appended."""
    if not pad:
        return value
    if hasattr(value, "expand"):  # torch
        import torch

        return torch.cat([value, value[-1:].expand(pad, *value.shape[1:])])
    import numpy as np

    return np.concatenate([value, np.repeat(value[-1:], pad, axis=0)])


def _unpadded(out: Any, sent: int, real: int, pieces: int) -> Any:
    """The first ``real`` items of an output computed on ``sent`` (padded) items; WRONG_OUTPUT
    when the output's first dimension is not the batch (only checkable when padding or splitting;
    otherwise the parent reports the shape against the task's contract)."""
    if sent == real and pieces == 1:
        return out
    shape = list(out.shape)
    if not shape or shape[0] != sent:
        raise ChildError(
            rules.WRONG_OUTPUT,
            f"the model returned shape {shape} for a batch of {sent} inputs; its first dimension "
            "must be the batch (logits [N, C] for a classifier, [N, C, H, W] for a denoiser)",
        )
    return out[:real]


def _reportable(shapes: list[list[int | None] | None] | None) -> list | None:
    """Shapes as the ready frame carries them (at most 64 inputs of at most 8 dimensions)."""
    if shapes is None:
        return None
    return [s if s is not None and len(s) <= 8 else None for s in shapes[:64]]


def batch_limits_of(shapes: list[list[int | None] | None]) -> tuple[int, int | None]:
    """(smallest, largest or None) batch every input accepts, from shapes whose dimension 0 is
    fixed (an int) or dynamic (None)."""
    fixed = [s[0] for s in shapes if s and isinstance(s[0], int) and s[0] > 0]
    return (min(fixed), min(fixed)) if fixed else (1, None)


def _setup_torch(threads: int):
    os.environ.setdefault("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set (a second model in one process, as in `runner bench`)
            pass
    return torch


# --------------------------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------------------------
class TorchModel:
    """A TorchScript module or an ExportedProgram's module on one device."""

    def __init__(self, module: Any, fmt: str, device: str, torch: Any):
        self.torch = torch  # set up by load()
        self.module = module
        self.format = fmt
        self.device = self.torch.device(device)
        self.precision = "fp32"
        self.memory_format = "contiguous"
        self._verify_channels_last = False
        self.notes: dict[str, Any] = {}
        # What the artifact says about its inputs (set by load): shapes with None for dynamic
        # dimensions (None: TorchScript does not say), the dtype each input is cast to, and the
        # batch sizes it accepts.
        self.input_shapes: list[list[int | None] | None] | None = None
        self.input_dtypes: list[Any] = []
        self.batch_min, self.batch_max = 1, None

    @classmethod
    def load(cls, path: str, fmt: str, device: str, threads: int, *,
             architecture: dict[str, Any] | None = None, published: str | None = None) -> TorchModel:
        torch = _setup_torch(threads)
        on = torch.device(device)
        if on.type == "cuda" and not torch.cuda.is_available():
            raise ChildError(
                rules.RUNTIME_ERROR, f"device {device} was asked for but CUDA is not available in the sandbox"
            )
        try:
            if fmt == "torchscript":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # the deprecation notice
                    module = torch.jit.load(path, map_location=on)
                module.eval()
            elif fmt == "safetensors":
                if architecture is None:
                    raise ChildError(rules.INVALID_ARTIFACT, "a .safetensors artifact needs its architecture")
                module = library_models.build(architecture, path, torch, published=published).to(on)
            else:
                program = torch.export.load(path)
                exported_inputs = _exported_inputs(program, torch)
                if on.type != "cpu":
                    try:
                        from torch.export.passes import move_to_device_pass

                        program = move_to_device_pass(program, on)
                    except ImportError:  # older torch: move the unlifted module instead
                        pass
                module = program.module()
                if on.type != "cpu":
                    module = module.to(on)
        except ChildError:
            raise
        except BaseException as exc:  # noqa: BLE001 - a damaged or hostile file may raise anything
            if isinstance(exc, KeyboardInterrupt):
                raise
            if is_out_of_memory(exc):
                raise ChildError(
                    rules.OUT_OF_MEMORY, f"loading the model ran out of memory: {describe(exc)}"
                ) from exc
            what = {"torchscript": "TorchScript file", "safetensors": "library architecture with these weights"}.get(
                fmt, "ExportedProgram (.pt2)")
            raise ChildError(rules.INVALID_ARTIFACT, f"cannot load the {what}: {describe(exc)}") from exc
        model = cls(module, fmt, device, torch)
        if fmt == "safetensors":
            model.input_dtypes = [torch.float32]  # the library's float32 architecture; weights cast to it
        elif fmt == "torchscript":
            # TorchScript keeps no input shapes or dtypes: inputs take the weights' dtype.
            model.input_dtypes = [_weights_dtype(module, torch)] * max(1, model._input_count())
        else:
            shapes, model.input_dtypes, (model.batch_min, model.batch_max) = exported_inputs
            model.input_shapes = shapes
        return model

    # -- settings ---------------------------------------------------------------------------
    def configure(self, precision: str = "fp32", channels_last: str = "auto") -> dict[str, Any]:
        torch = self.torch
        self.precision = precision
        if self.device.type == "cuda":
            # Full precision means full precision: no TF32 in convolutions or matmuls.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = True
        has_conv = any(p.dim() == 4 for p in self.module.parameters())
        wanted = channels_last == "on" or (
            channels_last == "auto" and self.device.type == "cuda" and has_conv
        )
        if wanted:
            # Checked on the first batch against the contiguous layout; kept only when it agrees.
            self._verify_channels_last = True
            self.memory_format = "channels_last (checking on the first batch)"
        else:
            reason = (
                "off"
                if channels_last == "off"
                else ("no 4-D weights" if not has_conv else "not on CPU by default")
            )
            self.memory_format = f"contiguous ({reason})"
        return self.info()

    def info(self) -> dict[str, Any]:
        torch = self.torch
        on_cuda = self.device.type == "cuda"
        return {
            "format": self.format,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if on_cuda else "cpu",
            "precision": self.precision + ("" if self.precision != "fp32" or not on_cuda else " (TF32 off)"),
            "memory_format": self.memory_format,
            "inputs": self._input_count(),
            "attributes": {"wants_noise_level": bool(getattr(self.module, "wants_noise_level", False))},
            "input_shapes": _reportable(self.input_shapes),
            "input_dtypes": [_dtype_name(d) if d is not None else None for d in self.input_dtypes][:64],
            "batch_min": self.batch_min,
            "batch_max": self.batch_max,
            "torch": torch.__version__,
            "cuda": torch.version.cuda if on_cuda else None,
            "threads": torch.get_num_threads(),
            "parameters": _parameter_count(self.module),
            "device_memory_bytes": int(torch.cuda.get_device_properties(self.device).total_memory) if on_cuda else None,
        }

    def _input_count(self) -> int:
        try:
            if self.format == "safetensors":
                return 1
            if self.format == "torchscript":
                return len(self.module.forward.schema.arguments) - 1
            return sum(1 for n in self.module.graph.nodes if n.op == "placeholder")
        except Exception:  # noqa: BLE001 - only informational
            return 1

    # -- running ----------------------------------------------------------------------------
    def _to_tensor(self, array_: Any, scale: float | None, dtype: Any = None):
        """One input on the model's device, in the dtype the model takes (float32 pixels cast to
        float16 for a ``.half()`` model, as onnxruntime's path does for a float16 graph)."""
        torch = self.torch
        tensor = array_ if isinstance(array_, torch.Tensor) else torch.from_numpy(array_)
        if tensor.device != self.device:
            tensor = tensor.to(self.device, non_blocking=False)
        if scale:
            tensor = tensor.float().div_(scale)
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        return tensor

    def _call(self, tensors: list, channels_last: bool):
        torch = self.torch
        if channels_last:
            tensors = [
                t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in tensors
            ]
        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    return self.module(*tensors)
            return self.module(*tensors)

    def forward(self, tensors: list):
        """Run the model; returns the output tensor (any device, any dtype)."""
        torch = self.torch
        if self._verify_channels_last:
            self._verify_channels_last = False
            reference = _single_output(self._call(tensors, False))
            try:
                self.module.to(memory_format=torch.channels_last)
                trial = _single_output(self._call(tensors, True))
                agrees = (
                    trial.shape == reference.shape
                    and reference.is_floating_point()
                    and bool(
                        torch.allclose(
                            trial.float(),
                            reference.float(),
                            rtol=1e-3,
                            atol=1e-3 * float(reference.float().abs().max()) + 1e-5,
                        )
                    )
                )
            except Exception as exc:  # noqa: BLE001 - a model that cannot take channels_last
                agrees = False
                self.notes["channels_last"] = f"refused: {describe(exc, 300)}"
            if agrees:
                self.memory_format = "channels_last"
            else:
                try:
                    self.module.to(memory_format=torch.contiguous_format)
                except Exception:  # noqa: BLE001 - it never left the contiguous layout
                    pass
                self.memory_format = "contiguous (channels_last changed the outputs or failed)"
            self.notes["memory_format"] = self.memory_format
            return reference
        return _single_output(self._call(tensors, self.memory_format == "channels_last"))

    def pieces(self, n: int) -> list[tuple[int, int, int]]:
        """``(start, stop, pad)`` pieces of ``n`` items in the batch sizes the model accepts
        (batch_pieces; the saliency request splits its images the same way)."""
        return batch_pieces(n, self.batch_min, self.batch_max)

    def run_batch(self, tensors: list):
        """The model on any number of items: split and padded to the batch sizes it accepts (the
        padding dropped again); a dtype this device cannot run is one line saying so."""
        torch = self.torch
        pieces = self.pieces(len(tensors[0]))
        outputs = []
        for start, stop, pad in pieces:
            piece = [_pad(t[start:stop], pad) for t in tensors]
            try:
                out = self.forward(piece)
            except ChildError:
                raise
            except Exception as exc:
                refused = self._low_precision_error(exc)
                if refused is None:
                    raise
                raise refused from exc
            outputs.append(_unpadded(out.detach(), stop - start + pad, stop - start, len(pieces)))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _low_precision_error(self, exc: BaseException) -> ChildError | None:
        """A model exported in float16 or bfloat16 that uses an operation this device has no kernel
        for: what dtype it has and what to do, in one line."""
        dtype = next((d for d in self.input_dtypes if d != self.torch.float32), None)
        text = str(exc)
        if dtype is None or not any(t in text.lower() for t in _LOW_PRECISION_MISSING):
            return None
        cause = next((line.strip() for line in reversed(text.splitlines())
                      if any(t in line.lower() for t in _LOW_PRECISION_MISSING)), "")[-200:]
        return ChildError(
            rules.RUNTIME_ERROR,
            f"the model's weights are {_dtype_name(dtype)} and this runner's {self.device.type} has "
            f"no {_dtype_name(dtype)} kernel for one of its operations ({cause}); export the model "
            'in float32 (without .half() or .to(torch.bfloat16)) and ask for {"precision": "bf16"} '
            "in the hyperparameters for reduced precision",
        )

    def predict(self, arrays: list, scales: list) -> Any:
        """numpy (or torch) inputs → numpy output (floating outputs as float32)."""
        dtypes = self.input_dtypes or [None] * len(arrays)
        tensors = [
            self._to_tensor(a, s, d) for a, s, d in zip(arrays, scales, _fit(dtypes, arrays), strict=True)
        ]
        out = self.run_batch(tensors)
        if out.is_floating_point():
            out = out.float()
        return out.cpu().numpy()

    def benchmark(self, shapes: list[list[int]], iters: int, warmup: int) -> dict[str, Any]:
        """Pure forward passes on random input already on the device; warm-up excluded, the device
        synchronized around the timer."""
        torch = self.torch
        dtypes = self.input_dtypes or [torch.float32] * len(shapes)
        tensors = [
            torch.rand(*shape, device=self.device).to(d or torch.float32)
            for shape, d in zip(shapes, _fit(dtypes, shapes), strict=True)
        ]
        for _ in range(max(1, warmup)):
            self.run_batch(tensors)
        self._sync()
        start = time.perf_counter()
        for _ in range(iters):
            self.run_batch(tensors)
        self._sync()
        seconds = time.perf_counter() - start
        return {"items_per_s": shapes[0][0] * iters / max(seconds, 1e-9), "seconds": seconds, "iters": iters}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)


def _fit(values: list, like: list) -> list:
    """``values`` as long as ``like`` (the last repeated, or None where there is none)."""
    return [values[min(i, len(values) - 1)] if values else None for i in range(len(like))]


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _weights_dtype(module: Any, torch: Any) -> Any:
    """The floating dtype of a module's first floating parameter or buffer (float32 when none)."""
    try:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    except Exception:  # noqa: BLE001 - a module without parameters() takes float32
        pass
    return torch.float32


def _exported_inputs(program: Any, torch: Any) -> tuple[list, list, tuple[int, int | None]]:
    """An ExportedProgram's user inputs: (shapes with None for dynamic dimensions, dtypes,
    (smallest, largest or None) batch from the range constraints of dimension 0)."""
    user = list(program.graph_signature.user_inputs)
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    shapes, dtypes, low, high = [], [], 1, None
    for name in user:
        value = nodes[name].meta.get("val") if name in nodes else None
        if not isinstance(value, torch.Tensor):
            shapes.append(None)
            dtypes.append(None)
            continue
        shape: list[int | None] = [d if isinstance(d, int) else None for d in value.shape]
        shapes.append(shape)
        dtypes.append(value.dtype if value.is_floating_point() else None)
        if not shape:
            continue
        if isinstance(shape[0], int):
            low, high = max(low, shape[0]), shape[0] if high is None else min(high, shape[0])
            continue
        bounds = program.range_constraints.get(getattr(value.shape[0], "node", None) and value.shape[0].node.expr)
        if bounds is not None:
            with_low, with_high = _finite_int(bounds.lower), _finite_int(bounds.upper)
            if with_low is not None:
                low = max(low, with_low)
            if with_high is not None:
                high = with_high if high is None else min(high, with_high)
    return shapes, dtypes, (low, high)


def _finite_int(value: Any) -> int | None:
    try:
        number = int(value)
    except Exception:  # noqa: BLE001 - sympy's infinities raise TypeError or AttributeError
        return None
    return number if abs(number) < 1 << 62 else None


def _single_output(out: Any):
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and len(out) == 1 and isinstance(out[0], torch.Tensor):
        return out[0]
    what = f"a {type(out).__name__}" + (
        f" of {len(out)} items" if isinstance(out, (tuple, list, dict)) else ""
    )
    raise ChildError(
        rules.WRONG_OUTPUT,
        f"the model returned {what}; it must return one tensor (logits [N, C] for a "
        "classifier): drop auxiliary outputs before exporting",
    )


class OnnxModel:
    """An ONNX graph in an onnxruntime InferenceSession (CUDA provider when asked for and present)."""

    def __init__(self, session: Any, device: str, threads: int, providers: list[str], note: str = ""):
        import numpy as np

        self.np = np
        self.session = session
        self.device = device
        self.threads = threads
        self.providers = providers
        self.note = note
        self.inputs = session.get_inputs()
        self.outputs = session.get_outputs()
        # Dimensions named ("n", "batch") or left out are dynamic; ints are fixed by the export.
        self.input_shapes: list[list[int | None] | None] = [
            [d if isinstance(d, int) and d > 0 else None for d in i.shape] if i.shape is not None else None
            for i in self.inputs
        ]
        self.batch_min, self.batch_max = batch_limits_of(self.input_shapes)
        self.fixed_batch = self.batch_max
        self.dtypes = [np.dtype(ONNX_INPUT_TYPES.get(i.type, "float32")).type for i in self.inputs]

    @classmethod
    def load(cls, path: str, device: str, threads: int) -> OnnxModel:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ChildError(rules.RUNTIME_ERROR, "onnxruntime is not installed on this runner") from exc
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        available = ort.get_available_providers()
        note = ""
        if device.startswith("cuda") and "CUDAExecutionProvider" in available:
            index = int(device.split(":", 1)[1]) if ":" in device else 0
            providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            if device.startswith("cuda"):
                note = "onnxruntime here has no CUDA provider: the model ran on the CPU"
            providers = ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            if is_out_of_memory(exc):
                raise ChildError(
                    rules.OUT_OF_MEMORY, f"loading the model ran out of memory: {describe(exc)}"
                ) from exc
            raise ChildError(rules.INVALID_ARTIFACT, f"cannot load the ONNX model: {describe(exc)}") from exc
        used = session.get_providers()
        actual = device if "CUDAExecutionProvider" in used else "cpu"
        return cls(session, actual, threads, used, note)

    def configure(self, precision: str = "fp32", channels_last: str = "auto") -> dict[str, Any]:
        for meta in self.inputs:
            if meta.type not in ONNX_INPUT_TYPES:
                raise ChildError(
                    rules.INVALID_ARTIFACT,
                    f"the ONNX graph's input {meta.name!r} is {meta.type}; the contract is floating "
                    "point pixels in [0, 1] (float32, float16 or double): export with a float input "
                    "and convert inside the model",
                )
        if precision != "fp32":
            self.note = (
                self.note + "; " if self.note else ""
            ) + "bf16 autocast does not apply to ONNX: ran as exported"
        if len(self.outputs) != 1:
            raise ChildError(
                rules.WRONG_OUTPUT,
                f"the ONNX graph has {len(self.outputs)} outputs "
                f"({', '.join(o.name for o in self.outputs)}); it must have one (logits [N, C] for a "
                "classifier)",
            )
        return self.info()

    def info(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "format": "onnx",
            "device": self.device,
            "device_name": self.device,
            "precision": "as exported (onnxruntime)",
            "memory_format": "onnxruntime's own",
            "inputs": len(self.inputs),
            "attributes": {"wants_noise_level": len(self.inputs) == 2},
            "onnxruntime": ort.__version__,
            "providers": self.providers,
            "fixed_batch": self.fixed_batch,
            "input_shapes": _reportable(self.input_shapes),
            "input_dtypes": [np_dtype.__name__ for np_dtype in self.dtypes][:64],
            "batch_min": self.batch_min,
            "batch_max": self.batch_max,
            "threads": self.threads,
            "note": self.note,
        }

    def predict(self, arrays: list, scales: list) -> Any:
        np = self.np
        feed_arrays = []
        for a, s, dtype in zip(arrays, scales, self.dtypes, strict=True):
            a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
            if s:
                a = a.astype(np.float32) / np.float32(s)
            feed_arrays.append(np.ascontiguousarray(a, dtype=dtype))
        pieces = batch_pieces(len(feed_arrays[0]), self.batch_min, self.batch_max)
        parts = []
        for start, stop, pad in pieces:
            feed = {
                i.name: _pad(a[start:stop], pad) for i, a in zip(self.inputs, feed_arrays, strict=True)
            }
            out = np.asarray(self.session.run(None, feed)[0])
            parts.append(_unpadded(out, stop - start + pad, stop - start, len(pieces)))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out = np.asarray(out)
        return out.astype(np.float32) if np.issubdtype(out.dtype, np.floating) else out

    def benchmark(self, shapes: list[list[int]], iters: int, warmup: int) -> dict[str, Any]:
        """Pure forward passes; on CUDA the input lives on the device (IOBinding)."""
        np = self.np
        rng = np.random.default_rng(0)
        if self.batch_max is not None:  # a fixed batch: time that
            shapes = [[self.batch_max, *shape[1:]] for shape in shapes]
        arrays = [
            rng.random(shape, dtype=np.float32).astype(d)
            for shape, d in zip(shapes, self.dtypes, strict=True)
        ]
        if self.device.startswith("cuda"):
            import onnxruntime as ort

            index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
            binding = self.session.io_binding()
            for meta, a in zip(self.inputs, arrays, strict=True):
                binding.bind_ortvalue_input(meta.name, ort.OrtValue.ortvalue_from_numpy(a, "cuda", index))
            binding.bind_output(self.outputs[0].name, "cuda", index)

            def run() -> None:
                self.session.run_with_iobinding(binding)
        else:
            feed = {meta.name: a for meta, a in zip(self.inputs, arrays, strict=True)}

            def run() -> None:
                self.session.run(None, feed)

        for _ in range(max(1, warmup)):
            run()
        start = time.perf_counter()
        for _ in range(iters):
            run()
        seconds = time.perf_counter() - start
        return {"items_per_s": shapes[0][0] * iters / max(seconds, 1e-9), "seconds": seconds, "iters": iters}


def load_model(path: str, fmt: str, device: str, *, threads: int = 0, architecture: dict[str, Any] | None = None,
               published: str | None = None) -> TorchModel | OnnxModel:
    """Load an artifact whose format the trusted parent sniffed (``architecture`` and
    ``published``: a safetensors artifact's, see the module docstring); raises ChildError."""
    if fmt in ("torchscript", "pt2", "safetensors"):
        return TorchModel.load(path, fmt, device, threads, architecture=architecture, published=published)
    if fmt == "onnx":
        return OnnxModel.load(path, device, threads)
    raise ChildError(rules.INVALID_ARTIFACT, f"unknown model format {fmt!r}")


# --------------------------------------------------------------------------------------------
# Frames.
# --------------------------------------------------------------------------------------------
class Channel:
    """Frames over the socket; file descriptors that arrive are kept for the next ``map``."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []

    def send(self, header: dict[str, Any], payload: Any = None) -> None:
        head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
        self.sock.sendall(FRAME_LENGTH.pack(len(head)) + head)
        if payload is not None and len(payload):
            self.sock.sendall(payload)

    def _fill(self, size: int) -> None:
        space = socket.CMSG_SPACE(4 * 8)
        while len(self.buffer) < size:
            data, ancillary, _, _ = self.sock.recvmsg(max(65536, size - len(self.buffer)), space)
            for level, kind, cdata in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
                    self.fds.extend(fds)
            if not data:
                raise EOFError("the parent closed the connection")
            self.buffer += data

    def receive(self) -> dict[str, Any]:
        self._fill(FRAME_LENGTH.size)
        (size,) = FRAME_LENGTH.unpack_from(self.buffer)
        if size > MAX_HEADER_BYTES:
            raise EOFError("a frame header over the limit")
        self._fill(FRAME_LENGTH.size + size)
        header = json.loads(bytes(self.buffer[FRAME_LENGTH.size : FRAME_LENGTH.size + size]))
        del self.buffer[: FRAME_LENGTH.size + size]
        return header

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds


# --------------------------------------------------------------------------------------------
# Serving.
# --------------------------------------------------------------------------------------------
class Server:
    def __init__(self, channel: Channel, model: TorchModel | OnnxModel):
        import numpy as np

        self.np = np
        self.channel = channel
        self.model = model
        self.region: mmap.mmap | None = None

    def serve(self) -> None:
        while True:
            header = self.channel.receive()
            op = header.get("op")
            if op == "exit":
                return
            if op == "map":
                self._map(header)
            elif op == "run":
                self._run(header)
            elif op == "bench":
                self._bench(header)
            elif op == "saliency":  # issue 17 item 5: saliency_server.py, bound beside this file
                _saliency_server().answer(self, header)
            else:
                self.channel.send(
                    {
                        "op": "error",
                        "id": None,
                        "kind": rules.RUNTIME_ERROR,
                        "message": f"the model server got an unknown request {op!r}",
                        "retry": False,
                    }
                )

    def _map(self, header: dict[str, Any]) -> None:
        fds = self.channel.take_fds()
        if not fds:
            raise EOFError("a map frame without its memory")
        for extra in fds[1:]:
            os.close(extra)
        if self.region is not None:
            try:
                self.region.close()
            except BufferError:  # a view is still alive: let the collector unmap it
                pass
        self.region = mmap.mmap(fds[0], int(header["size"]))
        os.close(fds[0])

    def _inputs(self, header: dict[str, Any]) -> tuple[list, list]:
        np = self.np
        arrays, scales = [], []
        for spec in header["inputs"]:
            dtype = np.dtype(spec["dtype"] if spec["dtype"] in WIRE_DTYPES else "float32")
            shape = tuple(int(s) for s in spec["shape"])
            arrays.append(np.ndarray(shape, dtype=dtype, buffer=self.region, offset=int(spec["offset"])))
            scales.append(float(spec["scale"]) if spec.get("scale") else None)
        return arrays, scales

    def _run(self, header: dict[str, Any]) -> None:
        np = self.np
        ident = header.get("id")
        started = time.perf_counter()
        try:
            arrays, scales = self._inputs(header)
            out = self.model.predict(arrays, scales)
            del arrays
        except ChildError as exc:
            self.channel.send(
                {"op": "error", "id": ident, "kind": exc.kind, "message": exc.message, "retry": exc.retry}
            )
            return
        except BaseException as exc:  # noqa: BLE001 - the submitted model may raise anything
            if isinstance(exc, KeyboardInterrupt):
                raise
            oom = is_out_of_memory(exc)
            if oom:
                _free_device_memory()
            shape = [list(a["shape"]) for a in header.get("inputs", [])]
            self.channel.send(
                {
                    "op": "error",
                    "id": ident,
                    "kind": rules.OUT_OF_MEMORY if oom else rules.RUNTIME_ERROR,
                    "retry": oom,
                    "message": f"the model raised {describe(exc)} (on inputs of shape "
                    f"{shape[0] if len(shape) == 1 else shape}, float32)",
                }
            )
            return
        out = np.ascontiguousarray(out)
        reply = {
            "op": "out",
            "id": ident,
            "shape": list(out.shape),
            "dtype": str(out.dtype),
            "nbytes": out.nbytes,
            "compute_s": time.perf_counter() - started,
        }
        notes = getattr(self.model, "notes", None)
        reply["info"] = {**(notes or {}), **memory_peaks()}
        if notes:
            notes.clear()
        self.send_array(reply, out, header)

    def send_array(self, reply: dict[str, Any], out: Any, header: dict[str, Any]) -> None:
        """Send ``reply`` with the array ``out`` (numpy): into the shared output region when the
        request's ``out_capacity`` holds it (``where: "shm"`` at ``out_offset``), else inline after
        the frame (``where: "inline"``, its bytes)."""
        np = self.np
        capacity = int(header.get("out_capacity", 0))
        if out.nbytes <= capacity and self.region is not None:
            target = np.ndarray(
                out.shape, dtype=out.dtype, buffer=self.region, offset=int(header["out_offset"])
            )
            target[...] = out
            del target
            reply["where"] = "shm"
            self.channel.send(reply)
        else:
            reply["where"] = "inline"
            self.channel.send(reply, out.reshape(-1).view(np.uint8).data)

    def _bench(self, header: dict[str, Any]) -> None:
        try:
            result = self.model.benchmark(
                [list(s) for s in header["shapes"]],
                int(header.get("iters", 10)),
                int(header.get("warmup", 2)),
            )
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.channel.send(
                {
                    "op": "error",
                    "id": None,
                    "kind": rules.RUNTIME_ERROR,
                    "retry": False,
                    "message": f"the forward benchmark failed: {describe(exc)}",
                }
            )
            return
        self.channel.send({"op": "bench", **result})


def _saliency_server() -> Any:
    """saliency_server.py, imported at its first request (a job that asks none never loads it)."""
    if __package__:
        from runner.sandboxed import saliency_server
    else:
        import saliency_server
    return saliency_server


def _parameter_count(module: Any) -> int | None:
    """Elements of the module's parameters (buffers such as batch-norm statistics excluded)."""
    try:
        return int(sum(p.numel() for p in module.parameters()))
    except Exception:  # noqa: BLE001 - a module without parameters() says nothing
        return None


def memory_peaks() -> dict[str, int]:
    """This process's peak memory so far: ``peak_rss_bytes`` (getrusage ru_maxrss, KiB on Linux,
    times 1024: the whole process, Python and torch included) and, once CUDA is in use,
    ``peak_cuda_bytes`` (torch.cuda.max_memory_allocated: tensors only, not the context or cache)."""
    import resource

    peaks = {"peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["peak_cuda_bytes"] = int(torch.cuda.max_memory_allocated())
    return peaks


def _free_device_memory() -> None:
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model_server.py", description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--format", required=True, choices=("torchscript", "pt2", "onnx", "safetensors"))
    parser.add_argument("--socket", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--architecture", type=json.loads, default=None)
    parser.add_argument("--published", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    channel = Channel(sock)
    started = time.perf_counter()
    try:
        model = load_model(args.artifact, args.format, args.device, threads=args.threads,
                           architecture=args.architecture, published=args.published)
        info = model.configure(args.precision, args.channels_last)
    except ChildError as exc:
        channel.send({"op": "error", "id": None, "kind": exc.kind, "message": exc.message, "retry": False})
        print(f"{exc.kind}: {exc.message}", file=sys.stderr)
        return 0
    channel.send({"op": "ready", "protocol": PROTOCOL, "load_s": time.perf_counter() - started, **info})
    try:
        Server(channel, model).serve()
    except (EOFError, ConnectionError):
        pass  # the parent went away: nothing left to answer
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: threads the model started neither delay the exit nor get a last word.
    os._exit(code)
