"""The emulated GPU's state: what ran on it, its streams and their capture into CUDA graphs, and its
memory pools. :mod:`cuda_harness.device_array` routes every array operation through :func:`launch`,
:func:`host_read` and :func:`host_to_device`, which count it, or, while the current stream is
capturing, record it (or refuse it, as CUDA and CuPy do).

The API follows CuPy's (cupy/cuda/stream.pyx, graph.pyx, memory.pyx): ``Stream`` (``with stream:``,
``begin_capture``, ``end_capture``, ``is_capturing``, ``synchronize``, ``Stream.null``), ``Graph``
(``launch``, ``upload``), ``MemoryPool`` (``malloc``, ``used_bytes``, ``total_bytes``,
``free_bytes``, ``free_all_blocks``) and ``using_allocator``. Work runs synchronously on the host, so
streams order nothing; what they change is whether work runs now or is recorded into a graph.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

ALLOCATION_UNIT = 512  # CuPy's pools round every allocation up to this (memory.pyx)


class CUDARuntimeError(RuntimeError):
    """cupy_backends.cuda.api.runtime.CUDARuntimeError: ``<status name>: <CUDA's message>``."""


CAPTURE_UNSUPPORTED = "cudaErrorStreamCaptureUnsupported: operation not permitted when stream is capturing"
CAPTURE_IMPLICIT = ("cudaErrorStreamCaptureImplicit: operation would make the legacy stream depend on a "
                    "capturing blocking stream")
CAPTURE_INVALIDATED = ("cudaErrorStreamCaptureInvalidated: operation failed due to a previous error during "
                       "capture")
# CuPy's own checks before a synchronous copy (cupy/cuda/memory.pyx).
SYNC_REFUSED = "the current stream is capturing, so synchronous API calls are disallowed"
H2D_REFUSED = "the current stream is capturing, so H2D transfers are disallowed"


class Counts:
    """What ran on the device: kernel launches (by operation, a graph replay counting one), host-to-
    device and device-to-host copies, and host reads (every wait for a value: a scalar, a mask's
    size, a device-to-host copy)."""

    def __init__(self) -> None:
        self.launches = 0
        self.by_operation: Counter[str] = Counter()
        self.host_to_device = 0
        self.device_to_host = 0
        self.host_reads = 0
        self.reads_by_operation: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        return {"launches": self.launches, "by_operation": Counter(self.by_operation),
                "host_to_device": self.host_to_device, "device_to_host": self.device_to_host,
                "host_reads": self.host_reads, "reads_by_operation": Counter(self.reads_by_operation)}


COUNTS = Counts()


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.streams: list[Stream] = []  # `with stream:` blocks, innermost last
        self.allocator: Callable[[int], Any] | None = None  # using_allocator's; None: the default pool
        self.nested = 0  # > 0 inside an operation (or a replay): NumPy runs plainly, nothing is counted


_thread = _ThreadState()
_capturing: set[Stream] = set()  # streams capturing now, any thread


# -- memory --------------------------------------------------------------------------------------------
class MemoryPointer:
    """A block of a :class:`MemoryPool`, back to the pool's free blocks when collected."""

    def __init__(self, pool: MemoryPool, size: int) -> None:
        self.pool, self.size = pool, size

    def __del__(self) -> None:
        self.pool._release(self.size)


class MemoryPool:
    """cupy.cuda.MemoryPool's bookkeeping: blocks rounded up to 512 bytes, freed blocks cached for
    reuse by an allocation of the same rounded size until ``free_all_blocks``. (CuPy's ``allocator``
    argument is taken and unused: the memory itself is NumPy's.)"""

    def __init__(self, allocator: Any = None) -> None:
        self._used = 0
        self._free: Counter[int] = Counter()  # rounded size -> cached free blocks

    def malloc(self, size: int) -> MemoryPointer:
        rounded = -(-size // ALLOCATION_UNIT) * ALLOCATION_UNIT
        if self._free[rounded]:
            self._free[rounded] -= 1
        self._used += rounded
        return MemoryPointer(self, rounded)

    def _release(self, rounded: int) -> None:
        self._used -= rounded
        self._free[rounded] += 1

    def used_bytes(self) -> int:
        return self._used

    def free_bytes(self) -> int:
        return sum(size * n for size, n in self._free.items())

    def total_bytes(self) -> int:
        return self._used + self.free_bytes()

    def n_free_blocks(self) -> int:
        return sum(self._free.values())

    def free_all_blocks(self, stream: Any = None) -> None:
        self._free.clear()


DEFAULT_POOL = MemoryPool()


@contextlib.contextmanager
def using_allocator(allocator: Callable[[int], Any] | None = None) -> Iterator[None]:
    """cupy.cuda.using_allocator: this thread allocates with ``allocator`` (e.g. ``pool.malloc``) inside."""
    before, _thread.allocator = _thread.allocator, allocator
    try:
        yield
    finally:
        _thread.allocator = before


def _private_pool(allocator: Any) -> bool:
    pool = getattr(allocator, "__self__", None)
    return isinstance(pool, MemoryPool) and pool is not DEFAULT_POOL


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def allocate(a: np.ndarray) -> None:
    """Charge a new array's memory to the current allocator, for the array's lifetime. A capture
    refuses memory from anywhere but a private pool: CUDA (in CuPy's relaxed capture mode) would allow
    a cudaMalloc, but memory from the shared default pool, once freed, is handed to other work while the
    graph still writes it at every replay."""
    allocator = _thread.allocator
    if not a.nbytes or allocator is None and not _capturing:
        return  # the default pool keeps no accounts (it would cost every test's every array)
    if current_stream()._capture is not None and not _private_pool(allocator):
        refuse(f"allocating {a.nbytes:,} bytes outside the capture's private pool (allocate under "
               "cupy.cuda.using_allocator(pool.malloc) with a MemoryPool of the graph's own)", invalidate=True)
    pointer = (DEFAULT_POOL.malloc if allocator is None else allocator)(a.nbytes)
    weakref.finalize(_owner(a), _keep, pointer)


def _keep(pointer: Any) -> None:
    """Nothing: the finalizer holds the block until the array's memory goes."""


# -- streams and graphs --------------------------------------------------------------------------------
class Capture:
    """The operations recorded by one stream capture, in order: (name, replay, launches)."""

    def __init__(self) -> None:
        self.operations: list[tuple[str, Callable[[], Any], Launches]] = []
        self.invalid: str | None = None


class Stream:
    """cupy.cuda.Stream. ``Stream.null`` is the legacy default stream, which cannot capture."""

    null: Stream
    _ids = itertools.count(2)  # 0 is the legacy stream, 1 the per-thread one in CUDA

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False,
                 priority: int | None = None) -> None:
        if ptds:
            raise NotImplementedError("the emulated device has no per-thread default stream")
        self.ptr = 0 if null else next(self._ids)
        self.non_blocking = non_blocking
        self._capture: Capture | None = None

    def __repr__(self) -> str:
        return f"<Stream {self.ptr} (device 0)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self) -> int:
        return self.ptr

    def __enter__(self) -> Stream:
        _thread.streams.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _thread.streams.pop()

    def begin_capture(self, mode: Any = None) -> None:
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if self._capture is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is already capturing")
        self._capture = Capture()
        _capturing.add(self)

    def end_capture(self) -> Graph:
        capture = self._capture
        if capture is None:
            raise CUDARuntimeError("cudaErrorIllegalState: the stream is not capturing")
        self._capture = None
        _capturing.discard(self)
        if capture.invalid is not None:
            raise CUDARuntimeError(f"{CAPTURE_INVALIDATED} (it refused: {capture.invalid})")
        return Graph._from_capture(capture)

    def is_capturing(self) -> bool:
        return self._capture is not None

    def synchronize(self) -> None:
        if self._capture is not None:
            refuse(f"synchronizing {self!r}", invalidate=True)
        _check_implicit(self, "synchronize")

    @property
    def done(self) -> bool:
        return True


Stream.null = Stream(null=True)


def current_stream() -> Stream:
    """cupy.cuda.get_current_stream: the innermost ``with stream:``, else the legacy stream."""
    streams = _thread.streams
    return streams[-1] if streams else Stream.null


def device_synchronize() -> None:
    """cudaDeviceSynchronize: refused while any stream captures."""
    for stream in list(_capturing):
        refuse(f"synchronizing the device while {stream!r} captures", invalidate=True, stream=stream)


class Graph:
    """cupy.cuda.Graph: made by ``Stream.end_capture``. ``launch`` replays the recorded operations in
    order on the arrays they were recorded with (their contents now; scalars as they were at capture).
    A replay counts as one launch; ``size`` is how many launches it replaces."""

    operations: list[tuple[str, Callable[[], Any], Launches]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("currently this class cannot be initiated by the user and must be created via "
                                  "stream capture")

    @classmethod
    def _from_capture(cls, capture: Capture) -> Graph:
        graph = cls.__new__(cls)
        graph.operations = capture.operations
        return graph

    @property
    def size(self) -> int:
        return sum(self.by_operation().values())

    def by_operation(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for name, _, n in self.operations:
            counts.update(_by_name(name, n))
        return +counts

    def launch(self, stream: Stream | None = None) -> None:
        def replay() -> None:
            for _, run, _ in self.operations:
                run()
        launch("graph", replay, in_place=True, stream=stream)

    def upload(self, stream: Stream | None = None) -> None:
        """Nothing to upload: the emulated graph is its list of operations."""


# -- operations ----------------------------------------------------------------------------------------
def refuse(what: str, invalidate: bool = False, stream: Stream | None = None, message: str = CAPTURE_UNSUPPORTED,
           error: type[Exception] = CUDARuntimeError) -> None:
    """Raise CUDA's (or CuPy's) error for ``what`` during a capture; a CUDA error also invalidates the
    capture, so that ``end_capture`` fails too, as in CUDA."""
    capture = (stream or current_stream())._capture
    if invalidate and capture is not None and capture.invalid is None:
        capture.invalid = what
    raise error(f"{message}: {what}")


def _check_implicit(stream: Stream, what: str) -> None:
    """Work on the legacy stream waits for every blocking stream: a capturing one refuses it."""
    if stream.ptr == 0:
        for other in list(_capturing):
            if not other.non_blocking:
                refuse(f"{what} on the legacy stream", invalidate=True, stream=other, message=CAPTURE_IMPLICIT)


def nested() -> bool:
    return _thread.nested > 0


class _Inside:
    """Run NumPy plainly: an operation's own steps, or a graph's replay, count as nothing more."""

    def __enter__(self) -> None:
        _thread.nested += 1

    def __exit__(self, *exc: Any) -> None:
        _thread.nested -= 1


inside = _Inside()


Launches = int | dict[str, int]  # a number, or a number by name (a matmul's copies apart from its GEMM)


def _by_name(name: str, launches: Launches) -> dict[str, int]:
    return launches if isinstance(launches, dict) else {name: launches}


def count(name: str, launches: Launches = 1) -> None:
    if isinstance(launches, int):
        if launches:
            COUNTS.launches += launches
            COUNTS.by_operation[name] += launches
        return
    for key, n in launches.items():
        count(key, n)


def poison(a: np.ndarray) -> None:
    """What an unexecuted result holds: NaN floats, -1 integers (in bounds as an index), True bools."""
    plain, kind = a.view(np.ndarray), a.dtype.kind
    plain.fill(np.nan if kind in "fc" else True if kind == "b" else np.iinfo(a.dtype).max if kind == "u" else -1)


def _arrays(value: Any) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays(v)]
    return []


def _write(target: Any, value: Any) -> None:
    if isinstance(target, np.ndarray):
        np.copyto(target.view(np.ndarray), np.asarray(value).view(np.ndarray), casting="unsafe")
    elif isinstance(target, (tuple, list)):
        for t, v in zip(target, value, strict=True):
            _write(t, v)


def launch(name: str, compute: Callable[[], Any], *, launches: Launches = 1, in_place: bool = False,
           inputs: tuple[Any, ...] = (), wrap: Callable[[Any], Any] = lambda r: r,
           stream: Stream | None = None) -> Any:
    """Run one operation of ``launches`` kernels (or kernels by name) on the current stream (or ``stream``).

    ``in_place``: it writes into existing arrays (``out=``, ``__setitem__``, ``fill``, a RawKernel) and
    returns nothing of use; a capture records it without running it. Otherwise it returns new data,
    ``wrap``-ed as device arrays: computed now, and, in a capture, poisoned (nothing ran) and recorded
    to write into that same memory at replay. A result that is a view of one of ``inputs`` (basic
    indexing, a reshape of contiguous data) is no launch at all."""
    if _thread.nested:
        return compute() if in_place else wrap(compute())
    stream = stream or current_stream()
    capture = stream._capture
    if _capturing and capture is None:
        _check_implicit(stream, name)
    if in_place:
        if capture is not None:
            capture.operations.append((name, compute, launches))
            return None
        count(name, launches)
        with inside:
            return compute()
    with inside:
        if capture is None:
            result = wrap(compute())
        else:  # computed on poisoned values, only for the result's shape and dtype
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                result = wrap(compute())
    arrays = _arrays(result)
    if not arrays:
        return result  # metadata (a dtype, a shape): nothing ran
    if inputs and all(any(np.may_share_memory(a, i) for i in inputs) for a in arrays):
        return result  # a view: metadata only
    for a in arrays:
        allocate(a)
    if capture is None:
        count(name, launches)
        return result
    for a in arrays:
        poison(a)
    if any(_by_name(name, launches).values()):
        capture.operations.append((name, lambda: _write(result, compute()), launches))
    return result


def host_read(what: str) -> None:
    """The host waits for a device value (a scalar, a mask's size): counted; refused in a capture."""
    if _thread.nested:
        return
    if current_stream()._capture is not None:
        refuse(f"host read ({what})", message=SYNC_REFUSED, error=RuntimeError)
    COUNTS.host_reads += 1
    COUNTS.reads_by_operation[what] += 1


def device_to_host(what: str) -> None:
    host_read(what)
    if not _thread.nested:
        COUNTS.device_to_host += 1


def host_to_device(what: str) -> None:
    """A copy from (pageable) host memory: counted; refused in a capture, as CuPy refuses it."""
    if _thread.nested:
        return
    if current_stream()._capture is not None:
        refuse(f"{what} (a copy from pageable host memory)", message=H2D_REFUSED, error=RuntimeError)
    COUNTS.host_to_device += 1
