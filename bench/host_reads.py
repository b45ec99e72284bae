"""How many values does ``fit`` read back to the host per training step? Counted with the test suite's
guarded backend (``tests/host_reads.py``), whose arrays count every ``float``, ``int``, ``bool``,
``item``, ``tolist`` and ``to_numpy``: one epoch of 2 steps against one of 20, reports at epoch ends only.

    python bench/host_reads.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import backprop as bp  # noqa: E402
from host_reads import GuardedBackend, Reads  # noqa: E402


def reads(backend: GuardedBackend, images: int) -> int:
    """Host reads of one epoch of ``fit`` on the MLP (batch 100, Adam, accuracy)."""
    rng = np.random.default_rng(0)
    x, y = rng.random((images, 784)).astype(np.float32), rng.integers(0, 10, images)
    model = bp.zoo.mlp(image_size=28, backend=backend)
    before = Reads.count
    model.fit(x.reshape(-1, 1, 28, 28), y, loss=bp.SoftmaxCrossEntropy(), optimizer=bp.Adam(model.parameters()),
              batch_size=100, metrics=["accuracy"], progress=False, report_interval=1e9)
    return Reads.count - before


def main() -> int:
    backend = GuardedBackend(np.float32, seed=0)
    few, many = reads(backend, 200), reads(backend, 2000)
    print(f"fit, one epoch: {few} host reads with 2 steps, {many} with 20 steps: {(many - few) / 18:.2f} per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
