"""Flatten: (N, ...) -> (N, features), the bridge from convolutions to Linear layers."""

from __future__ import annotations

import math

from backprop.backends import Array
from backprop.layers.base import Layer


class Flatten(Layer):
    def forward(self, x: Array) -> Array:
        self.check_input(x)
        if x.ndim == 0:
            raise ValueError("Flatten expected input of shape (N, ...), got a 0-d array")
        self.x_shape = x.shape
        return self.output(x.reshape(x.shape[0], math.prod(x.shape[1:])))  # (not -1: N may be 0)

    def backward(self, dout: Array) -> Array:
        self.check_grad(dout)
        return dout.reshape(self.x_shape)
