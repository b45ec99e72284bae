"""Flatten: (N, ...) -> (N, features), the bridge from convolutions to Linear layers."""

from __future__ import annotations

from typing import Any

from backprop.layers.base import Layer


class Flatten(Layer):
    def forward(self, x: Any) -> Any:
        self.backend.check_array(x, "Flatten input")
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: Any) -> Any:
        return dout.reshape(self.x_shape)
