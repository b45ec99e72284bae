"""Inverted dropout: zero a fraction p of activations while training and scale the rest by 1/(1-p),
so nothing changes at inference time."""

from __future__ import annotations

from backprop.backends import Array, Backend
from backprop.layers.base import Layer


class Dropout(Layer):
    random_in_training = True  # a new mask every step: no CUDA graph can replay it (backprop.graphs)

    def __init__(self, p: float = 0.5, *, backend: str | Backend | None = None) -> None:
        super().__init__(backend)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Array) -> Array:
        self.check_input(x)
        if not self.training or self.p == 0.0:
            self.mask = None
            return self.output(x)
        keep = self.backend.uniform(x.shape, dtype=x.dtype) >= self.p
        self.mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return self.output(x * self.mask)

    def backward(self, dout: Array) -> Array:
        self.check_grad(dout)
        return dout if self.mask is None else dout * self.mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
