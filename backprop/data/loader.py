"""Mini-batches from in-memory arrays: seeded shuffling, optional ``drop_last``, moved to a backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from backprop.backends import Backend


class DataLoader:
    """Iterate (x, y) mini-batches; ``batch_size=None`` is full batch, 1 is single-sample SGD.

    Each epoch (each ``iter``) draws a new order from a generator seeded once with ``seed``, so two
    loaders with the same seed give the same batches. With ``backend`` the batches are put on it
    (floating data in the backend's dtype).
    """

    def __init__(self, x: Any, y: Any = None, batch_size: int | None = None, shuffle: bool = True,
                 seed: int | None = None, drop_last: bool = False, backend: Backend | None = None) -> None:
        if y is not None and len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise ValueError("no samples to iterate over")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self.x, self.y = x, y
        self.batch_size = len(x) if batch_size is None else min(batch_size, len(x))
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.backend = backend
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _put(self, a: Any) -> Any:
        return a if self.backend is None else self.backend.asarray(a)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        n = len(self.x)
        order = self.rng.permutation(n) if self.shuffle else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            idx = sl if order is None else order[sl]
            yield self._put(self.x[idx]), None if self.y is None else self._put(self.y[idx])
