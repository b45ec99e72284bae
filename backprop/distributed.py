"""Data-parallel training over several processes: MPI (``mpi4py``) between processes and machines, NCCL
(``cupy.cuda.nccl``) between GPUs, the way ChainerMN and Horovod do it.

Launch K copies of a program with ``mpiexec -n K ...``; :func:`init` finds the launch from the variables
the MPI launcher sets (a plain run is one rank and imports no MPI) and returns the :class:`Communicator`
of this process: its ``rank``, the world ``size``, and the collectives :func:`~backprop.training.fit`
uses. ``fit(..., comm=comm)`` trains each rank on its share of every global batch and averages the
gradients before each update, so K ranks with a global batch B train the same model as one rank with
batch B, up to float rounding.

Two kinds of collectives, on purpose apart: *host* ones on small NumPy values (loss sums, flags, the
loader's generator state), always through MPI; and *array* ones on a backend's arrays (gradients,
weights), through MPI on the host memory of a CPU backend and through NCCL on the device memory of a
GPU backend (no copy to the host), its unique id sent over MPI.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from backprop.backends import Array, Backend
from backprop.backends.install import pip_install
from backprop.parameter import Parameter

# Variables an MPI launcher sets in every process it starts: (size, rank). Open MPI its own; MPICH's Hydra,
# Intel MPI and Slurm's PMI-2 PMI_*; MVAPICH its own; Slurm's srun --mpi=pmix PMIX_RANK beside its task count.
LAUNCH_VARIABLES = (("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"), ("PMI_SIZE", "PMI_RANK"),
                    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"), ("SLURM_NTASKS", "PMIX_RANK"))
INSTALL_HINT = pip_install("mpi")
# MPI_Abort tears the job down at once, and output a rank printed just before may not have been passed on by
# the launcher yet (lost, under load): a rank that aborts waits this long first.
FORWARD_WAIT = 0.5


def launch() -> tuple[int, int]:
    """(rank, size) as the MPI launcher announced them in the environment; (0, 1) for a plain run.
    Reads variables only: nothing imports MPI."""
    for size_var, rank_var in LAUNCH_VARIABLES:
        size, rank = os.environ.get(size_var), os.environ.get(rank_var)
        if size is not None and rank is not None and size.isdigit() and rank.isdigit():
            return int(rank), int(size)
    return 0, 1


class Communicator:
    """The ranks of one training job and their collectives. This base class is the world of one
    process: every collective returns its input, and nothing imports MPI."""

    rank = 0
    size = 1
    name = "single process"

    # -- host collectives: small NumPy values ----------------------------------------------------------
    def sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``values`` over the ranks (every rank gets it)."""
        return values

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true when it is true on any rank: what every rank then does together."""
        return tuple(bool(f) for f in flags)

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's ``value`` (anything JSON can hold) on every rank; sent as JSON text, never pickled."""
        return value

    # -- array collectives: a backend's arrays, in place ---------------------------------------------
    def array_comm(self, backend: Backend) -> Communicator:
        """The communicator that reduces ``backend``'s arrays (this one on the CPU, NCCL on a GPU)."""
        return self

    def allreduce_(self, a: Array) -> None:
        """Sum the contiguous array ``a`` over the ranks, in place."""

    def broadcast_(self, a: Array) -> None:
        """Overwrite the contiguous array ``a`` with rank 0's, in place."""

    def abort(self, status: int = 1) -> None:
        """End every rank of the job now, with ``status`` (after a failure on this rank only), once what
        this rank printed is flushed."""
        sys.stdout.flush()
        sys.stderr.flush()
        self._end(status)

    def _end(self, status: int) -> None:
        os._exit(status)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class MPICommunicator(Communicator):
    """Ranks launched by ``mpiexec``; collectives through MPI on host memory."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.name = f"MPI ({library_version()})"
        self._array_comms: dict[str, Communicator] = {}

    def sum(self, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values)
        out = np.empty_like(values)
        self.comm.Allreduce(values, out, op=self.MPI.SUM)
        return out

    def any(self, *flags: bool) -> tuple[bool, ...]:
        out = np.empty(len(flags), dtype=np.int32)
        self.comm.Allreduce(np.array(flags, dtype=np.int32), out, op=self.MPI.MAX)
        return tuple(bool(f) for f in out)

    def broadcast_json(self, value: Any) -> Any:
        text = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8) if self.rank == 0 else None
        length = np.array([0 if text is None else len(text)], dtype=np.int64)
        self.comm.Bcast(length, root=0)
        buffer = text.copy() if text is not None else np.empty(int(length[0]), dtype=np.uint8)
        self.comm.Bcast(buffer, root=0)
        return json.loads(buffer.tobytes())

    def array_comm(self, backend: Backend) -> Communicator:
        if backend.xp is np:
            return self
        if backend.name not in self._array_comms:
            self._array_comms[backend.name] = NCCLCommunicator(self)
        return self._array_comms[backend.name]

    def allreduce_(self, a: Array) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)

    def broadcast_(self, a: Array) -> None:
        self.comm.Bcast(a, root=0)

    def _end(self, status: int) -> None:
        time.sleep(FORWARD_WAIT)
        self.comm.Abort(status)


class NCCLCommunicator(Communicator):
    """Collectives on CuPy device arrays through NCCL, on the current stream: no copy to the host.
    ``host`` (an :class:`MPICommunicator`, or the single process) sends the NCCL unique id from rank 0
    and runs the host collectives. With one rank it still runs every array collective through NCCL."""

    def __init__(self, host: Communicator | None = None) -> None:
        nccl = _nccl()
        self.host = host or Communicator()
        self.rank, self.size = self.host.rank, self.host.size
        self.nccl = nccl
        uid = self.host.broadcast_json(list(nccl.get_unique_id()) if self.rank == 0 else None)
        self.comm = nccl.NcclCommunicator(self.size, tuple(uid), self.rank)
        self.name = f"NCCL {nccl_version()} over {self.host.name}"

    def sum(self, values: np.ndarray) -> np.ndarray:
        return self.host.sum(values)

    def any(self, *flags: bool) -> tuple[bool, ...]:
        return self.host.any(*flags)

    def broadcast_json(self, value: Any) -> Any:
        return self.host.broadcast_json(value)

    def array_comm(self, backend: Backend) -> Communicator:
        return self

    def _args(self, a: Array) -> tuple[int, int, int, int]:
        """NCCL's view of ``a``: its device pointer, element count and type, and the current stream."""
        import cupy
        if not a.flags.c_contiguous:
            raise ValueError("NCCL reduces contiguous arrays only")
        types = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.float64): self.nccl.NCCL_FLOAT64}
        return a.data.ptr, a.size, types[np.dtype(a.dtype)], cupy.cuda.get_current_stream().ptr

    def allreduce_(self, a: Array) -> None:
        ptr, count, dtype, stream = self._args(a)
        self.comm.allReduce(ptr, ptr, count, dtype, self.nccl.NCCL_SUM, stream)

    def broadcast_(self, a: Array) -> None:
        ptr, count, dtype, stream = self._args(a)
        self.comm.bcast(ptr, count, dtype, 0, stream)

    def abort(self, status: int = 1) -> None:
        self.host.abort(status)


def library_version() -> str:
    """The MPI library's name and version (without starting MPI); raises ImportError without mpi4py."""
    import mpi4py
    mpi4py.rc.initialize = mpi4py.rc.finalize = False  # MPI_Get_library_version needs no MPI_Init
    from mpi4py import MPI
    return " ".join(str(MPI.Get_library_version()).splitlines()[0].split())


def _nccl() -> Any:
    """CuPy's NCCL module; ImportError, saying what to install, where CuPy or its NCCL library is missing."""
    from cupy.cuda import nccl
    if not getattr(nccl, "available", True):
        raise ImportError("CuPy found no NCCL library: install NCCL for its CUDA version (for example "
                          "pip install nvidia-nccl-cu12), or use the CPU backends over MPI")
    return nccl


def nccl_version() -> str:
    """NCCL's version as CuPy loads it, such as "2.21.5"; raises ImportError without CuPy or NCCL."""
    v = int(_nccl().get_version())
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 10000 else f"{v // 1000}.{v // 100 % 10}.{v % 100}"


_world: Communicator | None = None


def init() -> Communicator:
    """This process's communicator: :class:`MPICommunicator` when launched by ``mpiexec`` with more than
    one process, else the single process (no MPI import). Called again, it returns the same one.

    Under MPI each rank also takes its own GPU (the rank's index among the ranks of its machine, modulo
    the GPUs there) when CuPy is installed, before any backend touches one, and an exception that ends
    a rank's program ends every rank (:func:`sys.excepthook` prints it, then aborts the job), so that no
    rank waits forever for one that failed.
    """
    global _world
    if _world is not None:
        return _world
    rank, size = launch()
    if size == 1:
        _world = Communicator()
        return _world
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(f"rank {rank} of {size} processes started by an MPI launcher, but mpi4py is not "
                          f"installed: {INSTALL_HINT}") from None
    if not MPI.Is_initialized():  # mpi4py was imported by library_version(), which starts no MPI
        MPI.Init()
        atexit.register(MPI.Finalize)
    _world = MPICommunicator(MPI.COMM_WORLD)
    _use_local_gpu(MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED).Get_rank())
    sys.excepthook = _abort_hook(_world)
    return _world


def current() -> Communicator:
    """The communicator :func:`init` made, or the single process if it has not run."""
    return _world or Communicator()


def availability() -> list[str]:
    """What ``backprop info`` says about MPI and NCCL: versions, or why each is missing."""
    lines = []
    try:
        import mpi4py
        lines.append(f"MPI: mpi4py {mpi4py.__version__}, {library_version()}")
    except Exception as exc:  # absent, or an MPI library that fails to load
        lines.append(f"MPI: unavailable ({type(exc).__name__}: {exc}): {INSTALL_HINT}")
    try:
        lines.append(f"NCCL: {nccl_version()} (through CuPy)")
    except Exception as exc:
        lines.append(f"NCCL: unavailable ({type(exc).__name__}: {exc}); it comes with CuPy on CUDA machines")
    rank, size = launch()
    lines.append(f"this process: rank {rank} of {size}" + (" (launched by mpiexec)" if size > 1 else ""))
    return lines


def _use_local_gpu(local_rank: int) -> None:
    """Make GPU ``local_rank`` (modulo the count) this process's CUDA device, where CuPy sees any."""
    try:
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no CuPy, no driver, no device: the CPU backends need none
        return
    if count:
        cupy.cuda.runtime.setDevice(local_rank % count)


def _abort_hook(comm: Communicator) -> Any:
    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        lines = traceback.format_exception(kind, exc, tb)
        sys.stderr.write("".join(f"[rank {comm.rank}] {line}" for text in lines for line in text.splitlines(True)))
        comm.abort(1)
    return hook


# -- data-parallel training ---------------------------------------------------------------------------
class GradientAverager:
    """The gradients of ``params`` in one contiguous buffer per dtype (each ``p.grad`` becomes a view
    of it), so that averaging them over the ranks is one allreduce per dtype per step."""

    def __init__(self, comm: Communicator, params: Iterable[Parameter]) -> None:
        params = list({id(p): p for p in params}.values())
        self.comm = comm.array_comm(params[0].backend)
        self.buffers: list[Array] = []
        for dtype in dict.fromkeys(np.dtype(p.dtype) for p in params):
            group = [p for p in params if np.dtype(p.dtype) == dtype]
            flat = group[0].backend.xp.zeros(sum(p.size for p in group), dtype=dtype)
            offset = 0
            for p in group:
                view = flat[offset:offset + p.size].reshape(p.shape)
                view[...] = p.grad
                p.grad = view
                offset += p.size
            self.buffers.append(flat)

    @property
    def nbytes(self) -> int:
        """Bytes each rank sends into one step's allreduce."""
        return sum(int(b.nbytes) for b in self.buffers)

    def average(self, share: float) -> None:
        """Replace every rank's gradients by their weighted sum over the ranks, each weighted by
        ``share``, its part of the global batch: the gradient of the global batch's mean loss."""
        for flat in self.buffers:
            if share != 1:
                flat *= flat.dtype.type(share)
            self.comm.allreduce_(flat)


def broadcast_arrays(comm: Communicator, arrays: Sequence[Array]) -> None:
    """Give every rank rank 0's values of ``arrays`` (weights, buffers, optimizer state), in place."""
    for a in arrays:
        comm.broadcast_(a)


def check_shares(size: int, n: int, batch_size: int) -> None:
    """Refuse a global batch that ``size`` ranks cannot share: one that does not divide, or a last
    batch with fewer samples than ranks."""
    if batch_size % size:
        raise ValueError(f"the global batch size {batch_size} does not divide over {size} ranks: choose a "
                         f"multiple of {size}")
    if 0 < n % batch_size < size:
        raise ValueError(f"the last batch of {n} samples in batches of {batch_size} holds {n % batch_size}, "
                         f"fewer than the {size} ranks: choose another batch size or number of samples")


def part(n: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s part of a batch of ``n`` samples split over ``size`` ranks: contiguous, with
    sizes differing by at most one (the first ``n % size`` ranks take one more)."""
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (rank < r))
