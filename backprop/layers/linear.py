"""Linear (affine) layer: y = x @ W + b, optionally followed by its ReLU (``activation="relu"``, as
Keras's ``Dense`` takes one): the bias and the ReLU then run as one kernel forward and one backward."""

from __future__ import annotations

from backprop.backends import Array, Backend
from backprop.checks import check_positive_int
from backprop.init import InitSpec, init_std, normal_weights
from backprop.layers.base import Layer
from backprop.parameter import Parameter

ACTIVATIONS = (None, "relu")


class Linear(Layer):
    """Fully connected layer on (N, in_features) inputs; ``W`` is (in, out), ``b`` is (out,); with
    ``activation="relu"`` the output is relu(x @ W + b)."""

    def __init__(self, in_features: int, out_features: int, *, activation: str | None = None,
                 init: InitSpec = "auto", backend: str | Backend | None = None) -> None:
        super().__init__(backend)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Linear's activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.init = init
        self.W = Parameter(self.backend.zeros((in_features, out_features)), self.backend)
        self.b = Parameter(self.backend.zeros((out_features,)), self.backend)
        self.reset_parameters()

    def reset_parameters(self, nonlinearity: str | None = None) -> None:
        std = init_std(self.init, self.in_features, self.out_features, self.activation or nonlinearity)
        self.W.data[...] = normal_weights(self.backend, self.W.shape, std)
        self.b.data[...] = 0

    def forward(self, x: Array) -> Array:
        self.check_input(x, (None, self.in_features))
        self.x = x
        y = self.backend.matmul(x, self.W.data)
        if self.activation == "relu":
            self.backend.add_bias_relu(y, self.b.data)
            self.y = y
        else:
            self.backend.add_bias(y, self.b.data)
        return self.output(y)

    def backward(self, dout: Array) -> Array:
        return self.backend.matmul(self._backward_params(dout), self.W.data.T)

    def backward_params(self, dout: Array) -> None:
        self._backward_params(dout)

    def _backward_params(self, dout: Array) -> Array:
        """Write the gradients of W and b; returns the gradient before the activation."""
        self.check_grad(dout)
        if self.activation == "relu":
            dout = self.backend.relu_bias_grad(dout, self.y, self.b.grad)
        else:
            self.backend.bias_grad(dout, self.b.grad)
        self.backend.matmul(self.x.T, dout, out=self.W.grad)
        return dout

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}" + (f", activation={self.activation!r}" if self.activation
                                                               else "")
