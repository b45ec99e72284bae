"""Programs the distributed tests launch with ``mpiexec -n K python tests/mpi_program.py WHAT ...`` (and
with plain ``python`` for one rank). Every rank runs the same program, as a user's would.

- ``fit BACKEND OUT``: SimpleConvNet, 20 steps of Adam on 2,000 images of the embedded subset in global
  batches of 100; each rank writes its weights to OUT/rank-R.npz and rank 0 the history to OUT/history.json.
- ``raise-in-fit RANK``: like ``fit``, but rank RANK raises RuntimeError in its third batch.
- ``cli RANK STEP KIND ARGS...``: ``backprop ARGS...``, where after its STEP-th update rank RANK gets
  Ctrl-C (KIND ``sigint``) or an OSError (KIND ``oserror``); RANK -1: none.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np

import backprop as bp
from backprop import distributed
from backprop.callbacks import Callback
from backprop.data.loader import DataLoader
from backprop.optim import Optimizer

FAILURE = "rank {} failed on purpose"


class RaiseAt(Callback):
    def __init__(self, rank: int, batch: int) -> None:
        self.rank, self.batch = rank, batch

    def on_batch_begin(self, loop):
        if distributed.current().rank == self.rank and loop.batch == self.batch:
            raise RuntimeError(FAILURE.format(self.rank))


def train(backend_name: str, callbacks=()) -> tuple[bp.Sequential, dict[str, list[float]]]:
    comm = distributed.init()
    backend = bp.get_backend(backend_name)
    data = bp.data.load_mnist_subset()
    bp.manual_seed(0)
    model = bp.zoo.simple_conv_net(backend=backend)
    loader = DataLoader(data.x_train[:2000], data.y_train[:2000], batch_size=100, seed=1, backend=backend,
                        scale=1 / 255, resident=True)
    history = model.fit(loader, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.Adam(model.parameters()), epochs=1,
                        metrics=["accuracy"], progress=False, callbacks=callbacks, comm=comm,
                        validation_data=(data.x_test[:250] / np.float32(255), data.y_test[:250]))
    return model, history


def after_step(rank: int, step: int, act) -> None:
    """Make rank ``rank``'s optimizer call ``act()`` after its ``step``-th update (``Optimizer.apply``)."""
    real, calls = Optimizer.apply, [0]

    def apply_then_act(self):
        real(self)
        calls[0] += 1
        if calls[0] == step and distributed.current().rank == rank:
            act()

    Optimizer.apply = apply_then_act  # type: ignore[method-assign]


def disk_gone() -> None:
    raise OSError("the disk went away on purpose")


def main(what: str, *args: str) -> int:
    if what == "fit":
        backend_name, out = args
        model, history = train(backend_name)
        rank = distributed.current().rank
        model.save(Path(out) / f"rank-{rank}.npz")
        if rank == 0:
            (Path(out) / "history.json").write_text(json.dumps(history))
        return 0
    if what == "raise-in-fit":
        train("numpy", [RaiseAt(int(args[0]), 3)])
        return 0
    if what == "cli":
        rank, step, kind, *argv = args
        after_step(int(rank), int(step), (lambda: signal.raise_signal(signal.SIGINT)) if kind == "sigint"
                   else disk_gone)
        from backprop.cli import main as cli
        return cli(argv)
    raise SystemExit(f"unknown program {what!r}")


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
