"""What every program that runs inside the sandbox and the runner that reads it agree on.

Standard library only: it is bound into the sandbox beside each program (see
runner/sandboxed/__init__.py, :func:`runner.sandboxed.stage`), and the runner imports the same file
as ``runner.sandboxed.rules``. One rule, one place:

1. The error kinds a program may report (:data:`REPORTABLE_KINDS`): the user-error kinds of
   runner/spec.py's ErrorKind that a program can know about itself (a program cannot know it ran
   out of time). tests/runner/test_contract.py reads every kind each program can emit and checks
   it against runner/spec.py's USER_ERROR_KINDS, so a typo fails a test, not a job.
2. What a failure of submitted code is (:func:`kind_of_exception`): out of memory
   (:func:`is_out_of_memory` for an exception in the program, :func:`says_out_of_memory` for the
   text the runner reads on a program's stderr, both from one list), a process or thread limit,
   a refused operation, or the code's own error.
3. Frames on the sockets between the runner and a program: a little-endian u32 length, then that
   many bytes of a JSON object (:data:`FRAME_LENGTH`).
"""
from __future__ import annotations

import struct

# --------------------------------------------------------------------------------------------
# 1. Error kinds.
# --------------------------------------------------------------------------------------------
INVALID_ARTIFACT = "invalid_artifact"
BAD_HPARAMS = "bad_hparams"
RUNTIME_ERROR = "runtime_error"
WRONG_OUTPUT = "wrong_output"
NOT_FINITE = "not_finite"
OUT_OF_MEMORY = "out_of_memory"
SANDBOX_VIOLATION = "sandbox_violation"
REPORTABLE_KINDS = frozenset({INVALID_ARTIFACT, BAD_HPARAMS, RUNTIME_ERROR, WRONG_OUTPUT, NOT_FINITE, OUT_OF_MEMORY,
                              SANDBOX_VIOLATION})
# Failures that depend only on the file and its hyperparameters, so they recur on every task.
ALWAYS_REPEATING = frozenset({INVALID_ARTIFACT, BAD_HPARAMS})


class ChildError(Exception):
    """The submission broke the contract; ``kind`` (one of :data:`REPORTABLE_KINDS`) says how.
    ``repeats``: the failure depends only on the submission and its hyperparameters, never on
    the task's data, so it would recur on its other tasks (runner/spec.py failure_repeats).
    ``retry``: the runner may try again with a smaller batch (out of memory in the model server).
    Raises ValueError for a kind a program may not report."""

    def __init__(self, kind: str, message: str, repeats: bool = False, *, retry: bool = False):
        if kind not in REPORTABLE_KINDS:
            raise ValueError(f"a sandboxed program may not report {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.repeats = repeats or kind in ALWAYS_REPEATING
        self.retry = retry

    def doc(self) -> dict[str, object]:
        """``{"kind", "message", "repeats"}``: the error as a document or frame carries it."""
        return {"kind": self.kind, "message": self.message, "repeats": self.repeats}


# --------------------------------------------------------------------------------------------
# 2. What a failure of submitted code is.
# --------------------------------------------------------------------------------------------
# What Python (MemoryError), numpy ("Unable to allocate 8.00 GiB for an array"), torch on the CPU
# ("DefaultCPUAllocator: can't allocate memory"), CUDA ("CUDA out of memory", OutOfMemoryError),
# C++ allocators (std::bad_alloc) and the kernel (ENOMEM, "[Errno 12] Cannot allocate memory") say.
MEMORY_ERROR_NAMES = ("MemoryError", "OutOfMemoryError")
MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "unable to allocate",
                   "failed to allocate", "std::bad_alloc", "[errno 12]")
# What a thread or process start says at the sandbox's process limit (RLIMIT_NPROC, threads count).
PROCESS_LIMIT_MESSAGES = ("can't start new thread", "resource temporarily unavailable", "pthread_create failed")
# errno values of operations the sandbox refuses: EPERM, EAGAIN, EACCES, EMFILE, EFBIG, EROFS, ENETUNREACH.
REFUSED_ERRNOS = (1, 11, 13, 24, 27, 30, 101)


def says_out_of_memory(text: str) -> bool:
    """Whether ``text`` (an exception's message, or a program's stderr) reports a failed allocation."""
    lowered = text.lower()
    return any(name.lower() in lowered for name in MEMORY_ERROR_NAMES) or any(m in lowered for m in MEMORY_MESSAGES)


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError (numpy's "Unable to allocate ... for an array" is one), torch's OutOfMemoryError
    or any exception whose message :func:`says_out_of_memory`."""
    return isinstance(exc, MemoryError) or type(exc).__name__ in MEMORY_ERROR_NAMES or says_out_of_memory(str(exc))


def hit_process_limit(exc: BaseException) -> bool:
    """A thread or process that could not start: "can't start new thread", EAGAIN from fork."""
    if isinstance(exc, BlockingIOError) or (isinstance(exc, OSError) and exc.errno == 11):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, OSError)) and any(m in text for m in PROCESS_LIMIT_MESSAGES)


def _process_limit() -> str:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    except (ImportError, OSError, ValueError):
        return "the sandbox's limit"
    return "the sandbox's limit" if soft == resource.RLIM_INFINITY else f"the sandbox's limit of {soft}"


def limit_note(exc: BaseException) -> str:
    """What a resource failure means here, to follow the exception's own text ("" for others)."""
    if is_out_of_memory(exc) or not hit_process_limit(exc):
        return ""
    return (f": the submission started too many processes or threads, past {_process_limit()} (threads "
            "included); start fewer")


def kind_of_exception(exc: BaseException) -> str:
    """Resource and sandbox failures get their own kind; anything else is the code's own error."""
    if is_out_of_memory(exc):
        return OUT_OF_MEMORY
    if hit_process_limit(exc) or isinstance(exc, (PermissionError, ConnectionError)):
        return SANDBOX_VIOLATION
    if isinstance(exc, OSError) and exc.errno in REFUSED_ERRNOS:
        return SANDBOX_VIOLATION
    return RUNTIME_ERROR


# --------------------------------------------------------------------------------------------
# 3. Frames.
# --------------------------------------------------------------------------------------------
FRAME_LENGTH = struct.Struct("<I")  # the length of the JSON header that follows
MAX_HEADER_BYTES = 1 << 20  # the largest header either side reads
