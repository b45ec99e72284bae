"""Training runs on disk: a run folder with the configuration, metrics and a checkpoint after every epoch.

The checkpoint holds everything the next update depends on: weights and buffers, the optimizer's
state, learning rate and step count, the shuffling generator, the backend's generator (Dropout), the
position inside the epoch and the epoch's sample order. So a run stopped anywhere (Ctrl-C saves after
the current batch) and resumed gives the same weights, bit for bit on the NumPy backend, as a run
that never stopped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass, fields
from itertools import takewhile
from pathlib import Path
from typing import Any

import numpy as np

from backprop.backends import Backend, get_backend, known_backends, manual_seed
from backprop.backends.install import pip_install
from backprop.backends.registry import backend_class
from backprop.callbacks import Callback, EpochLine, Logs, MetricsFiles, ProgressBar, StopOnInterrupt
from backprop.checkpoint import ArraySpec, CheckpointError, atomic_write, load_arrays, remove_temp_files, save_arrays
from backprop.data.loader import DataLoader
from backprop.data.mnist import DATASETS, Dataset, find_files, load_dataset, load_mnist_subset, read_files, spec
from backprop.distributed import Communicator
from backprop.graphs import graph_problem
from backprop.losses import SoftmaxCrossEntropy
from backprop.model import Sequential
from backprop.optim import SGD, AdaGrad, Adam, AdamW, Momentum, Optimizer, RMSProp
from backprop.training import Loop, TrainingDivergedError, TrainingState, fit
from backprop.zoo import MODELS, build_model

RUN_FORMAT = "backprop.run/2"
CONFIG, CHECKPOINT, WEIGHTS = "config.json", "checkpoint.npz", "model.npz"
METRICS_JSON, PLOT = MetricsFiles.JSON, "curves.png"
LOCK = ".lock"
# What a run writes while it holds its folder; `backprop plot` writes curves.png without holding it.
RUN_FILES = (CONFIG, CHECKPOINT, WEIGHTS, MetricsFiles.CSV, MetricsFiles.JSON)
EMBEDDED = "embedded subset"
EVAL_BATCH = 500
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "adagrad": AdaGrad,
                                          "rmsprop": RMSProp, "adam": Adam, "adamw": AdamW}


@dataclass
class RunConfig:
    """Everything that defines a run; saved as config.json in the run folder."""

    model: str = "simpleconvnet"
    dataset: str = "mnist"
    backend: str = "auto"
    dtype: str = "float32"
    epochs: int = 5
    batch_size: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    train_limit: int | None = None  # use only the first N training images
    test_limit: int | None = None
    data_source: str | None = None  # filled in when the data are found: a folder, or EMBEDDED
    data_sha256: str | None = None  # of the training images and labels used; a resumed run checks it

    def __post_init__(self) -> None:
        """Refuse values no run can have (a config.json edited by hand or damaged), naming the field."""
        choices = {"model": MODELS, "dataset": (*DATASETS, "mnist-subset"), "backend": (*known_backends(), "auto"),
                   "dtype": ("float32", "float64"), "optimizer": OPTIMIZERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name!r} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name, least in {"epochs": 1, "batch_size": 1, "seed": 0, "train_limit": 1, "test_limit": 1}.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"{name!r} must be >= {least}, got {value!r}")
        for name, positive in {"lr": True, "weight_decay": False}.items():
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name!r} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        """The config in ``d`` (parsed config.json); a field of the wrong type is a TypeError naming it,
        a value out of range a ValueError."""
        if not isinstance(d, dict):
            raise TypeError(f"expected a JSON object, got {type(d).__name__}")
        values: dict[str, Any] = {}  # each checked against its field's type below
        for f in fields(cls):
            if f.name in d:
                value = d[f.name]
                if isinstance(value, bool) or not isinstance(value, _FIELD_TYPES[str(f.type)]):
                    raise TypeError(f"{f.name!r} must be {f.type}, got {value!r}")
                values[f.name] = value
        return cls(**values)


_FIELD_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "str | None": (str, type(None)),
                "int | None": (int, type(None))}


class Interrupted(Exception):
    """Training stopped on Ctrl-C after saving a checkpoint; ``str`` says where."""


# -- data -------------------------------------------------------------------------------------------
def load_data(config: RunConfig, data_dir: str | None = None, *, download: bool = False,
              progress: bool = True, say: Callable[[str], None] = print) -> Dataset:
    """The run's dataset: from ``config.data_source`` when set (a resumed run), else found afresh.

    Full MNIST comes from ``data_dir``, ``$BACKPROP_DATA`` or the cache (or, with ``download``, the
    mirrors); without it the embedded subset is used, and ``say`` tells so in one line.
    """
    name = config.dataset
    if name == "mnist-subset" or config.data_source == EMBEDDED:
        data = load_mnist_subset()
    elif config.data_source is not None:
        data = read_files(find_files(name, config.data_source) or {}, spec(name), config.data_source)
    elif download:
        data = load_dataset(name, data_dir, download=True, progress=progress)
    else:
        files = find_files(name, data_dir)
        if files is not None:
            data = read_files(files, spec(name))
        elif spec(name).name == "mnist":
            data = load_mnist_subset()
            say(f"using the embedded MNIST subset ({len(data.x_train):,} training / {len(data.x_test):,} test "
                "images); for the full set pass --data-dir DIR, set BACKPROP_DATA or add --download")
        else:
            data = load_dataset(name, download=False)  # raises, saying where to put the files
    config.data_source = data.source
    return data


def training_data_sha256(data: Dataset, config: RunConfig) -> str:
    """SHA-256 of the training images and labels the run uses (its ``train_limit`` applied)."""
    n = config.train_limit or len(data.x_train)
    digest = hashlib.sha256()
    for a in (data.x_train[:n], data.y_train[:n]):
        digest.update(np.ascontiguousarray(a).data)
    return digest.hexdigest()


def loaders(data: Dataset, config: RunConfig, backend: Backend) -> tuple[DataLoader, DataLoader]:
    """Shuffled training batches and in-order test batches, pixels scaled to [0, 1] batch by batch on the
    backend, where the images stay (as bytes) for the whole run when they fit.

    (Measured on full MNIST: after one epoch SimpleConvNet scores 98.1% with pixels in [0, 1] but 97.2%
    with pixels standardized to mean 0, std 1.)
    """
    n_train = config.train_limit or len(data.x_train)
    n_test = config.test_limit or len(data.x_test)
    x_train, y_train, x_test, y_test = (data.x_train[:n_train], data.y_train[:n_train], data.x_test[:n_test],
                                        data.y_test[:n_test])
    resident = backend.can_hold(sum(a.nbytes for a in (x_train, y_train, x_test, y_test)))
    train = DataLoader(x_train, y_train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
                       backend=backend, scale=1 / 255, resident=resident)
    test = DataLoader(x_test, y_test, batch_size=EVAL_BATCH, shuffle=False, backend=backend, scale=1 / 255,
                      resident=resident)
    return train, test


# -- checkpoints ------------------------------------------------------------------------------------
def _rng_state(backend: Backend) -> dict[str, Any] | None:
    """The backend generator's state as JSON-able data; None where it cannot be saved (CuPy)."""
    bit_generator = getattr(backend.rng, "bit_generator", None)
    return bit_generator.state if backend.xp is np and bit_generator is not None else None


def build(config: RunConfig, backend: Backend, classes: int) -> tuple[Sequential, Optimizer]:
    """The run's model and optimizer, initialized from ``config.seed``."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    manual_seed(config.seed)
    model = build_model(config.model, classes=classes, backend=backend)
    optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return model, optimizer


def save_checkpoint(path: Path, config: RunConfig, model: Sequential, optimizer: Optimizer, loader: DataLoader,
                    state: TrainingState) -> Path:
    """Write the whole training state to ``path`` atomically (see the module docstring)."""
    backend = model.backend
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    arrays.update({f"optim/{k}": v for k, v in opt.pop("state").items()})
    if state.batch and state.order is not None:
        arrays["loader/order"] = state.order
    meta = {"format": RUN_FORMAT, "config": asdict(config), "layers": [type(la).__name__ for la in model.layers],
            "progress": state.counters(), "optimizer": opt, "loader": loader.state_dict(),
            "backend_rng": _rng_state(backend), "history": state.history}
    return save_arrays(path, arrays, meta)


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A run checkpoint's arrays and metadata; ``path`` may be the run folder."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    def expect(meta: dict[str, Any]) -> dict[str, ArraySpec | None]:
        if str(meta.get("format", "")).startswith("backprop.run/") and meta.get("format") != RUN_FORMAT:
            raise CheckpointError(f"{path}: written by another version of backprop (format {meta.get('format')!r}, "
                                  f"this one reads {RUN_FORMAT!r}), which cannot be resumed here; its model.npz still "
                                  "loads where the model's layers are unchanged")
        if meta.get("format") != RUN_FORMAT:
            raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected a training run ({RUN_FORMAT!r}); "
                                  "weights saved with model.save() load with Sequential.load()")
        meta["path"] = str(path)
        _check_meta(meta)
        return _members(meta)

    return load_arrays(path, expect)


def _members(meta: dict[str, Any]) -> dict[str, ArraySpec | None]:
    """The arrays a run checkpoint with these (checked) records holds: its model's and optimizer's, with
    their shapes and dtypes, built from the run's configuration on a private NumPy backend (no shared
    generator is drawn from), and an epoch's sample order if it stopped midway (checked against the
    data later, by :func:`check_progress`)."""
    config = RunConfig.from_dict(meta["config"])
    classes = len(spec("mnist" if config.dataset == "mnist-subset" else config.dataset).classes)
    model = build_model(config.model, classes=classes, backend=backend_class("numpy")(config.dtype))
    layers = [type(layer).__name__ for layer in model.layers]
    if meta.get("layers") != layers:
        raise CheckpointError(f"{meta['path']}: saved from layers {meta.get('layers')}, the run's {config.model} "
                              f"has {layers}")
    members: dict[str, ArraySpec | None] = {f"model/{k}": (tuple(v.shape), np.dtype(v.dtype))
                                            for k, v in model.state_arrays().items()}
    if meta["optimizer"].get("steps"):
        optimizer = OPTIMIZERS[config.optimizer](model.parameters(), lr=config.lr)
        members.update({f"optim/{i}.{name}": (p.shape, np.dtype(p.dtype)) for i, p in enumerate(optimizer.params)
                        for name in optimizer.state_names or ()})
    if meta["progress"]["batch"]:
        members["loader/order"] = None
    return members


def load_weights(model: Sequential, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Put a run checkpoint's weights and buffers into ``model`` (through ``load_state_dict``)."""
    saved = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    model.load_state_dict(saved, meta.get("layers"), meta["path"])


PROGRESS_COUNTS = ("epoch", "batch", "correct", "seen")
PROGRESS_SUMS = ("loss_sum", "seconds")
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")  # what resuming and plotting read


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def history_problem(history: Any) -> str | None:
    """What is wrong with ``history`` (a checkpoint's or metrics.json's) as a list of epoch records, if anything."""
    if not isinstance(history, list):
        return f"must be a list of epoch records, not {type(history).__name__}"
    for i, row in enumerate(history):
        if not isinstance(row, dict) or not all(_is_number(row.get(key)) for key in HISTORY_KEYS):
            return f"record {i} must hold numbers for {', '.join(HISTORY_KEYS)}, got {row!r:.80}"
    return None


def _check_meta(meta: dict[str, Any]) -> None:
    """Check a run checkpoint's records (config, position in training, history, optimizer and loader
    records, generator state) so that a damaged file fails on reading, naming what is wrong."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{meta['path']}: {what}")

    try:
        RunConfig.from_dict(meta.get("config"))
    except (TypeError, ValueError) as exc:
        raise bad(f"its 'config' is not a valid run configuration ({exc})") from None
    progress = meta.get("progress")
    if not isinstance(progress, dict) or set(progress) != {*PROGRESS_COUNTS, *PROGRESS_SUMS}:
        raise bad(f"'progress' must hold {', '.join(PROGRESS_COUNTS + PROGRESS_SUMS)}")
    for key in PROGRESS_COUNTS:
        if not _is_number(progress[key]) or not isinstance(progress[key], int) or progress[key] < 0:
            raise bad(f"progress {key!r} must be an int >= 0, got {progress[key]!r}")
    for key in PROGRESS_SUMS:
        if not _is_number(progress[key]) or not math.isfinite(progress[key]):
            raise bad(f"progress {key!r} must be a finite number, got {progress[key]!r}")
    problem = history_problem(meta.get("history"))
    if problem:
        raise bad(f"'history' {problem}")
    if len(meta["history"]) != progress["epoch"]:
        raise bad(f"'history' must list one record per finished epoch ({progress['epoch']})")
    if not isinstance(meta.get("optimizer"), dict) or not isinstance(meta.get("loader"), dict):
        raise bad("'optimizer' and 'loader' must be records")
    if not isinstance(meta.get("backend_rng"), (dict, type(None))):
        raise bad("'backend_rng' must be a generator state or null")


def check_progress(meta: dict[str, Any], arrays: dict[str, np.ndarray], n_train: int, n_batches: int) -> None:
    """Check a checkpoint's position inside the epoch against the run's data (read_checkpoint has checked
    its records), so that a damaged file fails here, naming what is wrong."""
    batch = meta["progress"]["batch"]
    if batch >= n_batches:
        raise CheckpointError(f"{meta['path']}: stopped at batch {batch}, but an epoch of this run has {n_batches}")
    order = arrays.get("loader/order")
    if batch and (order is None or not (  # runs shuffle, so a stop mid-epoch saves the order
            order.shape == (n_train,) and order.dtype.kind in "iu"
            and np.array_equal(np.sort(order), np.arange(n_train)))):
        raise CheckpointError(f"{meta['path']}: 'loader/order' is not an order of the run's {n_train} training images")


# -- the run folder ---------------------------------------------------------------------------------
def new_run_dir(config: RunConfig, parent: str | Path = "runs") -> Path:
    """Create and return a fresh folder ``parent/MODEL-DATASET-TIME``; a run started in the same second
    as another gets ``-2`` (``-3``, ...) appended instead of sharing its folder."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    stem = f"{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = parent / stem, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = parent / f"{stem}-{n}"


class RunInUseError(Exception):
    """Another process holds the run folder (see :func:`hold_run_dir`); the message names it."""


_held: dict[Path, int] = {}  # the run folders this process holds, and how deeply nested


@contextmanager
def hold_run_dir(run_dir: str | Path, *, create: bool = False) -> Iterator[Path]:
    """Own ``run_dir`` for the block, so that no other process writes the same run at the same time.

    The ownership is an OS lock on RUN_DIR/.lock, which also names the holder for the error another
    process gets (:class:`RunInUseError`); the OS drops it when the holder ends, even on kill -9. Taking
    it clears the temporaries of writes that a killed holder left. Holds nest within one process.
    With ``create``, missing folders are made, and removed again if the block fails before writing anything.
    """
    run_dir = Path(run_dir)
    made = _make_dirs(run_dir) if create else []
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no such folder)")
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield run_dir
        finally:
            _held[key] -= 1
        return
    try:
        fd = _lock(run_dir)
    except RunInUseError:
        raise  # the folders are the holder's now, even those this call made
    except BaseException:
        remove_unused(made)
        raise
    _held[key] = 1
    try:
        remove_temp_files(run_dir, RUN_FILES)
        yield run_dir
    except BaseException:
        remove_unused(made)  # while still holding the lock, so no other process is between check and removal
        raise
    finally:
        del _held[key]
        os.close(fd)  # which releases the lock


def _make_dirs(path: Path) -> list[Path]:
    """Make ``path`` and its missing parents; returns those it made, deepest first."""
    missing = list(takewhile(lambda p: not p.exists(), (path, *path.parents)))
    path.mkdir(parents=True, exist_ok=True)
    return missing


def remove_unused(folders: Sequence[Path]) -> None:
    """Remove ``folders`` (deepest first) while they hold nothing but a released lock file: a run that
    failed to start leaves no folders behind."""
    for folder in folders:
        with suppress(OSError):
            if {p.name for p in folder.iterdir()} <= {LOCK}:
                (folder / LOCK).unlink(missing_ok=True)
                folder.rmdir()
                continue
        return


_WINDOWS_LOCK_BYTE = 1 << 20  # msvcrt locks bytes against reading too: lock one past the holder's note


def _lock(run_dir: Path) -> int:
    """Take RUN_DIR/.lock without waiting and write the holder's note into it; returns its descriptor."""
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if sys.platform == "win32":
            import msvcrt
            os.lseek(fd, _WINDOWS_LOCK_BYTE, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:  # flock, not fcntl's record locks, which a second open of the file in this process would drop
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            raise
        raise RunInUseError(f"{run_dir} is in use by {_holder(path)}: one process at a time trains a run "
                            "folder") from None
    if not _same_file(fd, path):  # the file was removed (by a holder whose run failed) before we locked it
        os.close(fd)
        raise RunInUseError(f"{run_dir} changed hands while this process took its lock: try again")
    note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(note).encode())
    return fd


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is still the file at ``path``."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _holder(lock: Path, tries: int = 10) -> str:
    """The holder's note in ``lock`` as words. The holder writes it just after taking the lock, so it
    may not be there yet: wait for it a little (up to 0.2 s) before saying "another process"."""
    for _ in range(tries):
        try:
            note = json.loads(lock.read_text())
            return f"process {int(note['pid'])} on {note['host']} since {note['since']}"
        except ValueError:  # not written yet (empty), or half written
            time.sleep(0.02)
        except (OSError, TypeError, KeyError):
            break
    return "another process"


def write_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write(run_dir / CONFIG, lambda f: f.write(json.dumps(asdict(config), indent=1).encode()))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The history in a run's metrics.json, checked to hold what plotting reads."""
    path = Path(run_dir) / METRICS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {METRICS_JSON} yet: it has not finished an epoch")
    try:
        history = json.loads(path.read_text())
    except ValueError as exc:  # not JSON, or not UTF-8
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    problem = history_problem(history)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return history


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG})")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # truncated JSON, or fields of the wrong kind
        raise ValueError(f"{path}: not a valid run configuration ({exc})") from None


def run_title(config: RunConfig) -> str:
    """A run's plot title: model and dataset, saying when the embedded subset or a part of the data was used."""
    notes = [EMBEDDED] if config.data_source == EMBEDDED else []
    notes += [f"first {n:,} {part} images" for part, n in (("training", config.train_limit),
                                                           ("test", config.test_limit)) if n is not None]
    return f"{config.model} on {config.dataset}" + (f" ({', '.join(notes)})" if notes else "")


def curves_figure(history: list[dict[str, Any]], title: str = "") -> Any:
    """Loss and accuracy per epoch, train and test, as a matplotlib Figure (epoch ticks are whole numbers)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError(f"plotting needs matplotlib: {pip_install('plot')}") from None
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [100 * r["accuracy"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in history], "o-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        # min_n_ticks=1: with a single epoch the axis spans less than one, where the default gives fractions
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_metrics(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """:func:`curves_figure` as a PNG at ``path`` (written atomically); needs matplotlib (the ``[plot]`` extra)."""
    fig = curves_figure(history, title)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return path


class RunCheckpoint(Callback):
    """After every epoch, the run's checkpoint.npz (everything to resume from) and model.npz (weights).
    Training checks the loss, the weights and the test loss before each epoch ends, so a diverged state
    never overwrites a good checkpoint."""

    def __init__(self, run_dir: Path, config: RunConfig, loader: DataLoader) -> None:
        self.run_dir, self.config, self.loader = run_dir, config, loader

    def save(self, model: Sequential, optimizer: Optimizer, state: TrainingState) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, self.config, model, optimizer, self.loader, state)

    def on_epoch_end(self, loop: Loop, logs: Logs) -> None:
        assert isinstance(loop.model, Sequential)
        self.save(loop.model, loop.optimizer, loop.state)
        loop.model.save(self.run_dir / WEIGHTS)


def train(config: RunConfig, run_dir: str | Path, *, resume: bool = False, data_dir: str | None = None,
          download: bool = False, progress: bool = True, cuda_graph: bool = False,
          say: Callable[[str], None] = print, comm: Communicator | None = None) -> list[dict[str, Any]]:
    """Train (or, with ``resume``, continue) the run in ``run_dir`` up to ``config.epochs`` epochs.

    This is :func:`~backprop.training.fit` with the run's callbacks: a checkpoint, the weights and the
    metrics files after every epoch, Ctrl-C, a progress bar and a line per epoch through ``say``.
    Returns the history (one record per epoch). On Ctrl-C it saves a checkpoint after the current batch
    and raises :class:`Interrupted`. The run holds its folder throughout (:func:`hold_run_dir`).
    ``cuda_graph`` replays each step as a CUDA graph (cupy backend; the same results).

    With ``comm`` (:func:`backprop.distributed.init`), every rank calls this and trains its share of each
    batch; every rank reads a resumed run's files, rank 0 alone holds the folder, writes into it and
    speaks (``say``, the progress bar).
    """
    comm = comm or Communicator()
    with hold_run_dir(run_dir, create=not resume) if comm.rank == 0 else nullcontext(Path(run_dir)) as run_dir:
        return _train(config, run_dir, resume=resume, data_dir=data_dir, download=download,
                      progress=progress and comm.rank == 0, cuda_graph=cuda_graph,
                      say=say if comm.rank == 0 else _quiet, comm=comm)


def _quiet(line: str) -> None:
    """What ranks other than 0 say: nothing."""


# Fields a resumed run may change: a new total of epochs, another backend, the data's new place.
RESUMABLE_CHANGES = ("epochs", "backend", "data_source")


def _train(config: RunConfig, run_dir: Path, *, resume: bool, data_dir: str | None, download: bool, progress: bool,
           cuda_graph: bool, say: Callable[[str], None], comm: Communicator) -> list[dict[str, Any]]:
    writer = comm.rank == 0
    backend = get_backend(config.backend, config.dtype)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    if resume:
        arrays, meta = read_checkpoint(run_dir)
        saved = RunConfig.from_dict(meta["config"])
        changed = [f"{f.name} {getattr(saved, f.name)!r} there, {getattr(config, f.name)!r} here" for f in fields(saved)
                   if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(config, f.name)]
        if changed:
            raise CheckpointError(f"{meta['path']} belongs to another run than {run_dir / CONFIG} "
                                  f"({'; '.join(changed)}), so it cannot be resumed")
    elif writer and (run_dir / CHECKPOINT).exists():
        raise FileExistsError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                              "or choose another --run-dir")
    if download and not writer:
        comm.any(False)  # rank 0 downloads first (below); the others then find the files in the cache
    data = load_data(config, data_dir, download=download, progress=progress, say=say)
    if download and writer:
        comm.any(False)
    sha256 = training_data_sha256(data, config)
    if resume and config.data_sha256 not in (None, sha256):
        raise ValueError(f"the training data in {data.source} are not the ones {run_dir} trained on (SHA-256 "
                         f"{sha256[:12]}..., the run's {config.data_sha256[:12]}...): resume with --data-dir "
                         "pointing at the run's files")
    config.data_sha256 = sha256
    train_loader, test_loader = loaders(data, config, backend)
    model, optimizer = build(config, backend, len(data.spec.classes))
    problem = graph_problem(model) if cuda_graph else None
    if problem is not None:
        raise ValueError(f"--cuda-graph: {problem}")
    state = TrainingState()
    if resume:
        check_progress(meta, arrays, len(train_loader.x), len(train_loader))
        load_weights(model, arrays, meta)
        try:
            optimizer.load_state_dict({**meta["optimizer"], "state": {
                k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}})
            train_loader.load_state_dict(meta["loader"])
        except KeyError as exc:
            raise CheckpointError(f"{meta['path']}: the optimizer or loader record lacks {exc}") from None
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{meta['path']}: {exc}") from None
        if meta.get("backend_rng") is not None and _rng_state(backend) is not None:
            try:
                backend.rng.bit_generator.state = meta["backend_rng"]
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{meta['path']}: 'backend_rng' is not a state of the backend's generator "
                                      f"({exc!r})") from None
        elif _rng_state(backend) is not None or meta.get("backend_rng") is not None:
            say("note: the backend's random generator could not be restored, so Dropout masks after resuming "
                "differ from an uninterrupted run")
        state = TrainingState(**meta["progress"], order=arrays.get("loader/order"), history=meta["history"])
    if writer:
        write_config(run_dir, config)
    ranks = f", {comm.size} ranks ({comm.array_comm(backend).name})" if comm.size > 1 else ""
    say(f"{config.model} on {data.spec.title} ({len(train_loader.x):,} training / {len(test_loader.x):,} test images "
        f"from {data.source}); {config.optimizer} lr {config.lr:g}, batch {config.batch_size}, backend "
        f"{backend.name} ({backend.dtype.name}){ranks}; run folder {run_dir}")
    say(f"data credit: {data.spec.credit}")
    if state.epoch >= config.epochs:
        say(f"the run has already trained {state.epoch} epochs; ask for more with --epochs")
        return state.history
    if resume:
        say(f"resuming at epoch {state.epoch + 1}, batch {state.batch + 1} of {len(train_loader)}")
    interrupt = StopOnInterrupt(say)
    checkpoint = RunCheckpoint(run_dir, config, train_loader)
    callbacks = [interrupt, *([ProgressBar()] if progress else []),
                 *([checkpoint, MetricsFiles(run_dir), EpochLine(say, validation="test")] if writer else [])]
    try:
        fit(model, train_loader, loss=SoftmaxCrossEntropy(backend), optimizer=optimizer, epochs=config.epochs,
            validation_data=test_loader, metrics=["accuracy"], progress=False, callbacks=callbacks, state=state,
            cuda_graph=cuda_graph, comm=comm)
    except TrainingDivergedError as exc:
        kept = (f"{run_dir / CHECKPOINT} still holds epoch {state.epoch}" if state.epoch else
                f"no epoch finished, so {run_dir} holds no checkpoint")
        raise TrainingDivergedError(f"{exc}. {kept}") from None
    (interrupted,) = comm.any(interrupt.interrupted)  # Ctrl-C on any rank stopped them all
    if interrupted and state.batch:
        if writer:
            checkpoint.save(model, optimizer, state)
        raise Interrupted(f"stopped in epoch {state.epoch + 1} after batch {state.batch}/{len(train_loader)}")
    if interrupted and state.epoch < config.epochs:
        raise Interrupted(f"stopped after epoch {state.epoch}")
    return state.history
