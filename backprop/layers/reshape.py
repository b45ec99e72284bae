"""Flatten: (N, ...) -> (N, features), the bridge from convolutions to Linear layers."""

from __future__ import annotations

from backprop.backends import Array
from backprop.layers.base import Layer


class Flatten(Layer):
    def forward(self, x: Array) -> Array:
        self.backend.check_array(x, "Flatten input")
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: Array) -> Array:
        return dout.reshape(self.x_shape)
