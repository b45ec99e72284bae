"""The ``backprop`` command: ``train`` a zoo model on MNIST or Fashion-MNIST, ``eval`` a checkpoint,
``plot`` a run's curves, ``bench`` the kernels and training against PyTorch, ``profile`` a training
step, and ``info`` about this machine (versions, backends, GPU, BLAS, threads).

Errors a user can fix (bad arguments, missing files, an unusable backend) end with a one-line message
and exit status 2 or 1, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import platform
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from backprop import distributed
from backprop.backends import BackendUnavailableError, available_backends, get_backend, known_backends
from backprop.backends.install import pip_install
from backprop.checkpoint import CheckpointError
from backprop.checks import float_arg, int_arg
from backprop.data.download import DownloadError
from backprop.data.idx import IdxError
from backprop.data.mnist import DATASETS, DatasetNotFoundError
from backprop.runs import (
    EMBEDDED,
    OPTIMIZERS,
    PLOT,
    Interrupted,
    RunConfig,
    RunInUseError,
    build,
    hold_run_dir,
    load_data,
    load_weights,
    loaders,
    new_run_dir,
    plot_metrics,
    read_checkpoint,
    read_config,
    read_metrics,
    remove_unused,
    run_title,
    train,
)
from backprop.training import TrainingDivergedError
from backprop.zoo import MODELS

DATASET_CHOICES = (*DATASETS, "mnist-subset")
BACKENDS = (*known_backends(), "auto")
# Expected user errors: reported in one line, exit status 1. OSError covers the disk's (full, read-only,
# a file where a folder should be) as well as missing files.
USER_ERRORS = (BackendUnavailableError, CheckpointError, DatasetNotFoundError, DownloadError, IdxError,
               TrainingDivergedError, RunInUseError, OSError, ValueError)


def _say(line: str) -> None:
    tqdm.write(line)  # keeps a running progress bar intact


_positive_int = int_arg(1, "a positive integer")
_nonneg_int = int_arg(0, "a non-negative integer")
_positive_float = float_arg(False, "a positive number")
_nonneg_float = float_arg(True, "a number >= 0")


def _path(text: str) -> str:
    """A path argument; an empty one would silently mean the current folder or the default, so it is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


# -- train ------------------------------------------------------------------------------------------
# Options that define a run; with --resume they come from the run's config.json instead.
RUN_OPTIONS = ("model", "dataset", "optimizer", "lr", "weight_decay", "batch_size", "seed", "dtype",
               "train_limit", "test_limit")


def _add_train(sub: Any) -> None:
    d = RunConfig()
    p = sub.add_parser("train", help="train a zoo model, writing a run folder",
                       description="Train a model from the zoo; after every epoch the run folder gets a "
                                   "checkpoint, the weights and the metrics.")
    p.add_argument("--model", choices=MODELS, help=f"architecture (default {d.model})")
    p.add_argument("--dataset", choices=DATASET_CHOICES,
                   help=f"default {d.dataset}; without its files, mnist falls back to the embedded subset")
    p.add_argument("--data-dir", type=_path, metavar="DIR",
                   help="folder with the dataset's IDX files (default: $BACKPROP_DATA, then the cache)")
    p.add_argument("--download", action="store_true", help="download the dataset into the cache if it is missing")
    p.add_argument("--backend", choices=BACKENDS, help=f"default {d.backend}: a working GPU, else the CPU")
    p.add_argument("--dtype", choices=("float32", "float64"), help=f"default {d.dtype}")
    p.add_argument("--epochs", type=_positive_int, help=f"total epochs (default {d.epochs}); with --resume, "
                                                        "a new total")
    p.add_argument("--batch-size", type=_positive_int, help=f"default {d.batch_size}")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default {d.optimizer}")
    p.add_argument("--lr", type=_positive_float, help=f"learning rate (default {d.lr:g})")
    p.add_argument("--weight-decay", type=_nonneg_float, help=f"default {d.weight_decay:g}")
    p.add_argument("--seed", type=_nonneg_int, help=f"seeds weights, shuffling and dropout (default {d.seed})")
    p.add_argument("--train-limit", type=_positive_int, metavar="N", help="train on the first N images only")
    p.add_argument("--test-limit", type=_positive_int, metavar="N", help="test on the first N images only")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-dir", type=_path, metavar="DIR",
                       help="where to write the run (default runs/MODEL-DATASET-TIME)")
    where.add_argument("--resume", type=_path, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR exactly where it stopped")
    p.add_argument("--plot", action="store_true", help="write the loss and accuracy curves as a PNG (needs "
                                                       f"matplotlib: {pip_install('plot')})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--cuda-graph", action="store_true", help="replay each training step as a CUDA graph "
                                                            "(cupy backend): the same results, launched at once")
    p.set_defaults(run=_train, parser=p)


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error(f"--plot needs matplotlib: {pip_install('plot')} (or leave --plot out and run "
                     "backprop plot RUN_DIR later)")
    comm = distributed.init()  # under mpiexec: this process's rank of the job
    config = None  # a resumed run's comes from its config.json, read once the run folder is held
    made: list[Path] = []  # folders made here, removed again if the run fails before writing anything
    if args.resume is not None:
        given = [f"--{o.replace('_', '-')}" for o in RUN_OPTIONS if getattr(args, o) is not None]
        if given:
            parser.error(f"{', '.join(given)} cannot change on --resume: the run's config.json fixes them "
                         "(only --epochs, --backend, --data-dir, --plot and --no-progress may be given)")
        run_dir = Path(args.resume)
    else:
        config = RunConfig(**{o: getattr(args, o) for o in RUN_OPTIONS if getattr(args, o) is not None})
        if args.run_dir is not None:
            run_dir = Path(args.run_dir)
        elif comm.rank == 0:
            runs_existed = Path("runs").is_dir()
            run_dir = new_run_dir(config)
            made = [run_dir] if runs_existed else [run_dir, run_dir.parent]
        run_dir = Path(comm.broadcast_json(str(run_dir) if comm.rank == 0 else None))  # rank 0 names it
    if comm.rank != 0:  # rank 0 holds the folder and writes into it; the others only read a resumed run's files
        return _train_held(args, parser, run_dir, config, comm)
    try:
        with hold_run_dir(run_dir, create=args.resume is None):
            return _train_held(args, parser, run_dir, config, comm)
    except BaseException:
        remove_unused(made)
        raise


def _train_held(args: argparse.Namespace, parser: argparse.ArgumentParser, run_dir: Path,
                config: RunConfig | None, comm: distributed.Communicator) -> int:
    if config is None:
        config = read_config(run_dir)
        if args.data_dir is not None:
            if config.data_source == EMBEDDED:
                parser.error("the run trained on the embedded subset: --data-dir cannot change its data")
            config.data_source = None  # the files have moved: read them from --data-dir
    if args.epochs is not None:
        config.epochs = args.epochs
    if args.backend is not None:
        config.backend = args.backend
    try:
        history = train(config, run_dir, resume=args.resume is not None, data_dir=args.data_dir,
                        download=args.download, progress=not args.no_progress, cuda_graph=args.cuda_graph,
                        say=_say, comm=comm)
        status = 0
    except Interrupted as exc:
        if comm.rank != 0:
            return 130
        _say(f"{exc}; checkpoint saved. Continue with: backprop train --resume {run_dir}")
        history = read_checkpoint(run_dir)[1]["history"]
        status = 130
    if comm.rank != 0:
        return status
    if args.plot and history:
        try:
            _say(f"curves: {plot_metrics(history, run_dir / PLOT, run_title(config))}")
        except ImportError as exc:
            _say(str(exc))
    if status == 0:
        _say(f"run folder: {run_dir} (config.json, checkpoint.npz, model.npz, metrics.csv, metrics.json)")
    return status


# -- eval -------------------------------------------------------------------------------------------
def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="accuracy and confusion matrix of a checkpoint on its test set",
                       description="Evaluate a run's checkpoint on the test split of its dataset.")
    p.add_argument("checkpoint", type=_path, metavar="CHECKPOINT", help="a run folder or its checkpoint.npz")
    p.add_argument("--data-dir", type=_path, metavar="DIR",
                   help="read the dataset from DIR instead of where the run found it")
    p.add_argument("--backend", choices=BACKENDS, help="default: the run's")
    p.set_defaults(run=_eval, parser=p)


def format_confusion(confusion: np.ndarray, classes: Sequence[str]) -> str:
    """The confusion matrix as a table: rows are true classes, columns predicted ones, plus recall."""
    labels = [c if len(c) <= 5 else c[:5] for c in classes]
    width = max(5, len(str(int(confusion.max()))) + 1)
    lines = ["true \\ pred " + "".join(f"{lab:>{width}}" for lab in labels) + "  recall"]
    for i, (lab, row) in enumerate(zip(labels, confusion, strict=True)):
        recall = row[i] / max(1, row.sum())
        lines.append(f"{lab:>11} " + "".join(f"{int(v):>{width}}" for v in row) + f"  {100 * recall:5.1f}%")
    return "\n".join(lines)


def _eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from backprop.losses import SoftmaxCrossEntropy
    from backprop.training import evaluate

    arrays, meta = read_checkpoint(args.checkpoint)
    config = RunConfig.from_dict(meta["config"])
    config.test_limit = None
    if args.data_dir is not None:
        config.data_source = None
    if args.backend:
        config.backend = args.backend
    backend = get_backend(config.backend, config.dtype)
    data = load_data(config, args.data_dir, say=_say)
    _, test_loader = loaders(data, config, backend)
    model, _ = build(config, backend, len(data.spec.classes))
    load_weights(model, arrays, meta)
    scores = evaluate(model, test_loader, loss=SoftmaxCrossEntropy(backend), confusion=True)
    loss, accuracy, confusion = scores["loss"], scores["accuracy"], scores["confusion"]
    epochs = meta["progress"]["epoch"]
    print(f"{config.model} after {epochs} epoch{'s' * (epochs != 1)}, on the {len(data.x_test):,} test images of "
          f"{data.spec.title} ({data.source}), backend {backend.name}")
    print(f"accuracy {100 * accuracy:.2f}%  loss {loss:.4f}  errors {int(confusion.sum() - np.trace(confusion))}")
    print(format_confusion(confusion, data.spec.classes))
    return 0


# -- plot -------------------------------------------------------------------------------------------
def _add_plot(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw a run's loss and accuracy curves as a PNG")
    p.add_argument("run_dir", type=_path, metavar="RUN_DIR")
    p.add_argument("-o", "--output", type=_path, help="PNG to write (default RUN_DIR/curves.png)")
    p.set_defaults(run=_plot, parser=p)


def _plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    run_dir = Path(args.run_dir)
    config = read_config(run_dir)
    history = read_metrics(run_dir)
    try:
        path = plot_metrics(history, Path(args.output or run_dir / PLOT), run_title(config))
    except ImportError as exc:
        print(f"backprop plot: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


# -- info -------------------------------------------------------------------------------------------
def _version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return str(getattr(importlib.import_module(module), "__version__", "installed"))
    except Exception as exc:  # a broken install should not break `info`
        return f"installed but fails to import ({type(exc).__name__}: {exc})"


def _blas_lines() -> list[str]:
    """The BLAS NumPy uses and its threads: from threadpoolctl when installed, else numpy's config."""
    if importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_info
        return [f"{p.get('internal_api', '?')} {p.get('version') or ''} ({p.get('user_api')}, "
                f"{p.get('num_threads')} threads, {p.get('filepath')})" for p in threadpool_info()]
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return [f"{blas.get('name', '?')} {blas.get('version', '')} (threads: install threadpoolctl to see them)"]
    except Exception:  # older NumPy without mode="dicts", or a layout change
        return ["unknown (run python -c 'import numpy; numpy.show_config()')"]


def _gpu_lines() -> list[str]:
    if available_backends().get("cupy") is not None:
        return ["none usable (see the cupy backend above)"]
    try:
        import cupy
        lines = []
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            with cupy.cuda.Device(i):
                free, total = cupy.cuda.runtime.memGetInfo()
            lines.append(f"{i}: {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), compute capability "
                         f"{props['major']}.{props['minor']}")
        cuda = cupy.cuda.runtime.runtimeGetVersion()
        return [*lines, f"CUDA runtime {cuda // 1000}.{cuda % 1000 // 10}"]
    except Exception as exc:
        return [f"could not query the GPU: {type(exc).__name__}: {exc}"]


def _info(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import backprop

    print(f"backprop {backprop.__version__} ({Path(backprop.__file__).parent})")
    print(f"Python {platform.python_version()} on {platform.platform()}")
    for module in ("numpy", "tqdm", "matplotlib", "numba", "cupy", "threadpoolctl"):
        print(f"  {module:14} {_version(module)}")
    print("backends:")
    for name, reason in available_backends().items():
        print(f"  {name:8} {'available' if reason is None else 'unavailable: ' + reason}")
    default = os.environ.get("BACKPROP_BACKEND")
    source = " (from $BACKPROP_BACKEND)" if default else ""
    if default and default.strip().lower() not in BACKENDS:
        source = f" (from $BACKPROP_BACKEND, which is not a backend: choose one of {', '.join(BACKENDS)})"
    print(f"  default for new layers: {default or 'numpy'}{source}")
    print("distributed:")
    for line in distributed.availability():
        print(f"  {line}")
    print("GPU:")
    for line in _gpu_lines():
        print(f"  {line}")
    print("BLAS:")
    for line in _blas_lines():
        print(f"  {line}")
    print(f"threads: {os.cpu_count()} CPUs" + "".join(
        f", {v}={os.environ[v]}" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "NUMBA_NUM_THREADS") if v in os.environ))
    if importlib.util.find_spec("numba") is not None:
        import numba
        # numba.config sets its options from the environment at run time; its stubs do not list them
        pool = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined, unused-ignore]
        print(f"numba: pool of {pool} threads (NUMBA_NUM_THREADS); the numba backend's "
              "kernels are serial and leave the cores to BLAS")
    return 0


# -- bench and profile -----------------------------------------------------------------------------
def _names(choices: Collection[str]) -> Any:
    """A comma-separated list of ``choices``, as an argument type."""
    def parse(text: str) -> list[str]:
        names = [n.strip().lower() for n in text.split(",") if n.strip()]
        wrong = [n for n in names if n not in choices]
        if wrong or not names:
            raise argparse.ArgumentTypeError(f"expected names from {', '.join(choices)}, got {text!r}")
        return names
    return parse


def _add_bench(sub: Any) -> None:
    from backprop.bench.suite import DEFAULT_OUT, Plan

    full = Plan.full().e2e
    p = sub.add_parser("bench", help="time every kernel and end-to-end training on every backend, with PyTorch",
                       description="Kernel micro-benchmarks (every kernel x every available backend, two shapes) "
                                   "and end-to-end training (the zoo's models x every backend x PyTorch, same "
                                   "weights and batches), the implementations taking turns over rounds. Writes "
                                   "JSON, Markdown and (with matplotlib) a PNG into --out.")
    p.add_argument("--quick", action="store_true", help="under a minute: 2 models, 1 round, short windows")
    p.add_argument("--out", type=_path, metavar="DIR", default=str(DEFAULT_OUT),
                   help=f"folder for the results (default ./{DEFAULT_OUT}/)")
    p.add_argument("--models", type=_names(MODELS), metavar="M,M",
                   help=f"end-to-end models (default {','.join(full.models)}; --quick: simpleconvnet,mlp)")
    p.add_argument("--backends", type=_names(known_backends()), metavar="B,B",
                   help="backprop backends (default: every available one)")
    p.add_argument("--only", choices=("kernels", "e2e"), help="measure only one of the two")
    p.add_argument("--no-torch", action="store_true", help="no PyTorch rows")
    p.add_argument("--rounds", type=_positive_int, help=f"end-to-end rounds (default {full.rounds}; --quick: 1)")
    p.add_argument("--windows", type=_positive_int, help=f"timed windows a round (default {full.windows})")
    p.add_argument("--window-seconds", type=_positive_float, metavar="S",
                   help=f"length of a timed window (default {full.window_seconds})")
    p.add_argument("--train-images", type=int_arg(100, "an integer >= 100"), metavar="N",
                   help=f"images in the accuracy epoch (default {full.train_images:,}; --quick: 1,000)")
    p.add_argument("--compare", nargs=2, type=_path, metavar=("A.json", "B.json"),
                   help="measure nothing: print two runs side by side")
    p.set_defaults(run=_bench, parser=p)


def _bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from backprop.bench import report
    from backprop.bench.suite import Plan, run_bench

    if args.compare:
        print(report.compare(*(report.read_result(path) for path in args.compare)))
        return 0
    plan = Plan.quick_plan() if args.quick else Plan.full()
    plan.kernels, plan.e2e_on = args.only != "e2e", args.only != "kernels"
    for option in ("models", "rounds", "windows", "window_seconds", "train_images"):
        if getattr(args, option) is not None:
            setattr(plan.e2e, option, getattr(args, option))
    _, written = run_bench(plan, Path(args.out), args.backends, torch=not args.no_torch, say=print)
    print("\n" + "\n".join(f"wrote {w}" if not w.startswith("no ") else w for w in written))
    return 0


def _add_profile(sub: Any) -> None:
    p = sub.add_parser("profile", help="time of each layer and kernel inside training steps",
                       description="Forward and backward time of every layer, the loss and the optimizer, and "
                                   "the own time of every backend kernel, over a few training steps of a zoo "
                                   "model (the device synchronized after every call), with each one's share.")
    p.add_argument("--model", choices=MODELS, default="simpleconvnet", help="default simpleconvnet")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="default auto")
    p.add_argument("--steps", type=_positive_int, default=10, help="profiled steps (default 10)")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="default 100")
    p.add_argument("--json", type=_path, metavar="FILE", help="also write the profile as JSON to FILE")
    p.set_defaults(run=_profile, parser=p)


def _profile(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from backprop.bench.profile import format_profile, profile_model
    from backprop.bench.report import write_text

    result = profile_model(args.model, args.backend, args.steps, args.batch_size)
    print(format_profile(result))
    if args.json:
        text = json.dumps(result, indent=1) + "\n"
        print(f"wrote {write_text(args.json, text)}")
    return 0


# -- entry point ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backprop", description="Deep learning from scratch: train, evaluate "
                                     "and inspect models from the backprop zoo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_eval(sub)
    _add_plot(sub)
    _add_bench(sub)
    _add_profile(sub)
    info = sub.add_parser("info", help="versions, backends and why each is (un)available, GPU, BLAS, threads")
    info.set_defaults(run=_info, parser=info)
    return parser


# Under mpiexec, how long a rank other than 0 waits before reporting its error and ending the job: an
# error every rank meets (bad data, a diverged run) is then reported once, by rank 0, which ends the job
# at once; an error of that rank alone is reported by it after this wait.
ECHO_WAIT = 1.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 error, 2 bad arguments, 130 interrupted)."""
    parser = build_parser()
    rank, _ = distributed.launch()
    # under mpiexec, usage, help and argument errors come from rank 0 alone
    quiet = contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext()
    with quiet, contextlib.redirect_stderr(io.StringIO()) if rank else contextlib.nullcontext():
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # say it with the subcommand's usage, not the top level's
            args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.run(args, parser)
    except BrokenPipeError:  # the reader went away (`backprop info | head -1`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141
    except KeyboardInterrupt:
        return _fail("\naborted", 130)
    except USER_ERRORS as exc:
        return _fail(f"backprop {args.command}: error: {_one_line(exc)}", 1)


def _fail(message: str, status: int) -> int:
    """Print ``message`` to stderr and return ``status``; a rank of a job under mpiexec ends the whole job,
    since the others would wait for it forever (see :data:`ECHO_WAIT`)."""
    comm = distributed.current()
    if comm.size > 1 and comm.rank:
        time.sleep(ECHO_WAIT)
    print(f"[rank {comm.rank}] {message.lstrip()}" if comm.rank else message, file=sys.stderr)
    if comm.size > 1:
        comm.abort(status)
    return status


def _one_line(exc: BaseException) -> str:
    """The error's message; an OSError from the system as "PATH: what happened" without its "[Errno N]"."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}" + (f" (and {exc.filename2})" if exc.filename2 is not None else "")
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
