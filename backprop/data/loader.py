"""Mini-batches from in-memory arrays: seeded shuffling, ``drop_last``, normalization, one-hot labels,
and a device-resident mode that moves the whole dataset to the backend once (so a GPU is not fed
batch by batch over the bus).
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np

from backprop.backends import Backend
from backprop.checks import check_labels, check_number
from backprop.distributed import part


class DataLoader:
    """Iterate (x, y) mini-batches; ``batch_size=None`` is full batch, 1 is single-sample SGD.

    Each epoch (each ``iter``) draws a new order from a generator seeded once with ``seed``, so two
    loaders with the same seed give the same batches. With ``backend`` the batches are put on it
    (floating data in the backend's dtype).

    ``scale`` and ``normalize=(mean, std)`` turn x into floats, ``(x * scale - mean) / std``, batch by
    batch on the backend: uint8 images travel as bytes and become floats there. ``one_hot=K`` turns
    integer labels into (N, K) float rows. ``resident=True`` (needs ``backend``) copies x and y to the
    backend once, up front, and cuts every batch there.
    """

    def __init__(self, x: Any, y: Any = None, batch_size: int | None = None, shuffle: bool = True,
                 seed: int | None = None, drop_last: bool = False, backend: Backend | None = None, *,
                 scale: float | None = None, normalize: tuple[float, float] | None = None,
                 one_hot: int | None = None, resident: bool = False) -> None:
        x = np.asarray(x) if isinstance(x, (list, tuple)) else x
        y = np.asarray(y) if isinstance(y, (list, tuple)) else y
        if y is not None and len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise ValueError("no samples to iterate over")
        if batch_size is not None and (not isinstance(batch_size, numbers.Integral)
                                       or isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        if normalize is not None:
            if len(normalize) != 2:
                raise ValueError(f"normalize must be (mean, std), got {normalize!r}")
            normalize = (check_number(normalize[0], "normalize's mean", lambda v: True, "finite"),
                         check_number(normalize[1], "normalize's std", lambda v: v > 0, "positive and finite"))
        if scale is not None:
            scale = check_number(scale, "scale", lambda v: True, "finite")
        if resident and backend is None:
            raise ValueError("resident=True needs a backend to keep the data on: pass backend=...")
        if one_hot is not None:
            self._check_labels(y, one_hot)
        self.batch_size = len(x) if batch_size is None else int(batch_size)  # > len(x): one short batch,
        # or none with drop_last, as in PyTorch
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.backend = backend
        self.one_hot = None if one_hot is None else int(one_hot)
        self.resident = resident
        # (x * scale - mean) / std as one multiply-add: x * a - b
        mean, std = normalize if normalize is not None else (0.0, 1.0)
        self._affine = None if scale is None and normalize is None else (
            (1.0 if scale is None else scale) / std, mean / std)
        # (resident without a backend was refused above)
        self.x = backend.asarray(x) if resident and backend is not None else x
        self.y = backend.asarray(y) if resident and backend is not None and y is not None else y
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _check_labels(y: Any, classes: int) -> None:
        if y is None:
            raise ValueError("one_hot needs labels y")
        if not isinstance(classes, numbers.Integral) or isinstance(classes, bool) or classes < 1:
            raise ValueError(f"one_hot must be the number of classes, a positive int, got {classes!r}")
        if np.dtype(y.dtype).kind not in "iu" or y.ndim != 1:
            raise ValueError(f"one_hot needs integer labels of shape (N,), got {y.dtype} {tuple(y.shape)}")
        check_labels(y, classes, f"one_hot={classes}")

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self) -> np.ndarray | None:
        """The sample order of the next epoch (None: in order); draws from the generator when shuffling."""
        return self.rng.permutation(len(self.x)) if self.shuffle else None

    def batches(self, order: np.ndarray | None = None, start: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[Any, Any]]:
        """The batches of one epoch in ``order`` (from :meth:`order`), from batch number ``start`` on;
        with ``shard=(rank, size)`` only rank's part of each (data-parallel training: see
        :func:`backprop.distributed.part`).

        A resident loader uploads the order once and gathers every batch on the device."""
        if self.resident and order is not None:
            order = self.backend.asarray(order)  # type: ignore[union-attr]
        for i in range(start, len(self)):
            first = i * self.batch_size
            mine = part(self.batch_len(i), *shard)
            sl = slice(first + mine.start, first + mine.stop)
            idx = sl if order is None else order[sl]
            yield self._x(self.x[idx]), None if self.y is None else self._y(self.y[idx])

    def batch_len(self, i: int) -> int:
        """The number of samples in batch ``i`` (all ranks' together)."""
        return min(len(self.x), (i + 1) * self.batch_size) - i * self.batch_size

    def head(self, n: int) -> tuple[Any, Any]:
        """The first ``n`` samples as a batch would give them (for probing a model's output shape)."""
        return self._x(self.x[:n]), None if self.y is None else self._y(self.y[:n])

    def targets(self) -> Any:
        """Every target as the batches give them (one-hot rows with ``one_hot``), for checking them once."""
        return None if self.y is None else self._y(self.y)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self.batches(self.order())

    def _put(self, a: Any) -> Any:
        return a if self.backend is None or self.resident else self.backend.asarray(a)

    def _x(self, xb: Any) -> Any:
        xb = self._put(xb)
        if self._affine is None:
            return xb
        dtype = self.backend.dtype if self.backend is not None else np.dtype(np.float32)
        a, b = self._affine
        xb = xb.astype(dtype) if xb.dtype != dtype else xb.copy()  # never scale the caller's array
        xb *= dtype.type(a)
        if b:
            xb -= dtype.type(b)
        return xb

    def _y(self, yb: Any) -> Any:
        yb = self._put(yb)
        if self.one_hot is None:
            return yb
        xp = np if self.backend is None else self.backend.xp
        dtype = self.backend.dtype if self.backend is not None else np.dtype(np.float32)
        return xp.eye(self.one_hot, dtype=dtype)[yb]

    # -- state, for exact resumption --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The shuffling generator's state (JSON-able): restoring it repeats the following epochs."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
