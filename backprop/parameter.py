"""Parameter: a trainable array with its gradient and its optimizer state, kept on one backend.

Keeping the optimizer state on the parameter (rather than in the optimizer) means moving a model with
``to()`` moves everything a training run needs, in one place.
"""

from __future__ import annotations

from typing import Any

from backprop.backends import Backend


class Parameter:
    """``data`` and ``grad`` (same shape, dtype and backend); ``backward`` overwrites ``grad``."""

    def __init__(self, data: Any, backend: Backend) -> None:
        backend.check_array(data, "parameter data", backend.dtype)
        self.backend = backend
        self.data = data
        self.grad = backend.xp.zeros_like(data)
        self.state: dict[str, Any] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def to(self, backend: Backend) -> None:
        """Move data, gradient and optimizer state to ``backend``, in its dtype."""
        self.data = backend.asarray(self.data, dtype=backend.dtype)
        self.grad = backend.asarray(self.grad, dtype=backend.dtype)
        self.state = {k: backend.asarray(v, dtype=backend.dtype) for k, v in self.state.items()}
        self.backend = backend

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, backend={self.backend.name!r})"
