"""Elementwise activations and Softmax; each keeps its output, from which its gradient follows."""

from __future__ import annotations

from backprop.backends import Array
from backprop.layers.base import Layer


class _Activation(Layer):
    """Shared shape of ReLU, Sigmoid, Tanh and Softmax: y = f(x), dx = f'(dout, y)."""

    kernel = ""

    def forward(self, x: Array) -> Array:
        self.check_input(x)
        self.y = getattr(self.backend, self.kernel)(x)
        return self.output(self.y)

    def backward(self, dout: Array) -> Array:
        self.check_grad(dout)
        return getattr(self.backend, self.kernel + "_backward")(dout, self.y)


class ReLU(_Activation):
    kernel = "relu"


class Sigmoid(_Activation):
    kernel = "sigmoid"


class Tanh(_Activation):
    kernel = "tanh"


class Softmax(_Activation):
    """Softmax over the last axis; backward is the Jacobian-vector product (no Jacobian built).

    For classification, prefer a plain output with :class:`~backprop.losses.SoftmaxCrossEntropy`,
    which fuses the two and is stable.
    """

    kernel = "softmax"
