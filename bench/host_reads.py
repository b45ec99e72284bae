"""How many values does ``fit`` read back to the host per training step? Counted with the test suite's
guarded backend (``tests/host_reads.py``), whose arrays count every ``float``, ``int``, ``bool``,
``item``, ``tolist`` and ``to_numpy``: one epoch of 2 steps against one of 20, reports at epoch ends only.

    python bench/host_reads.py
    PYTHONPATH=OTHER_TREE python bench/host_reads.py   # another revision's fit (its backends/ and
                                                       # kernels/ linked into its backprop/, as installed)
"""

from __future__ import annotations

import sys
from inspect import signature
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import backprop as bp  # noqa: E402
from host_reads import GuardedBackend, Reads  # noqa: E402


def reads(backend: GuardedBackend, images: int) -> int:
    """Host reads of one epoch of ``fit`` on the MLP (batch 100, Adam, accuracy)."""
    rng = np.random.default_rng(0)
    x, y = rng.random((images, 784)).astype(np.float32), rng.integers(0, 10, images)
    model = bp.Sequential(bp.Linear(784, 100, backend=backend), bp.ReLU(backend=backend),
                          bp.Linear(100, 100, backend=backend), bp.ReLU(backend=backend),
                          bp.Linear(100, 10, backend=backend))
    # (reports at epoch ends only; a revision from before reporting points takes no such argument)
    only_at_epoch_ends = {"report_interval": 1e9} if "report_interval" in signature(bp.training.fit).parameters else {}
    before = Reads.count
    model.fit(x, y, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.Adam(model.parameters()), batch_size=100,
              metrics=["accuracy"], progress=False, **only_at_epoch_ends)
    return Reads.count - before


def main() -> int:
    backend = GuardedBackend(np.float32, seed=0)
    few, many = reads(backend, 200), reads(backend, 2000)
    print(f"fit, one epoch: {few} host reads with 2 steps, {many} with 20 steps: {(many - few) / 18:.2f} per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
