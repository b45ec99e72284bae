"""Linear (affine) layer: y = x @ W + b."""

from __future__ import annotations

from backprop.backends import Array, Backend
from backprop.checks import check_positive_int
from backprop.init import InitSpec, init_std, normal_weights
from backprop.layers.base import Layer
from backprop.parameter import Parameter


class Linear(Layer):
    """Fully connected layer on (N, in_features) inputs; ``W`` is (in, out), ``b`` is (out,)."""

    def __init__(self, in_features: int, out_features: int, *, init: InitSpec = "auto",
                 backend: str | Backend | None = None) -> None:
        super().__init__(backend)
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.init = init
        self.W = Parameter(self.backend.zeros((in_features, out_features)), self.backend)
        self.b = Parameter(self.backend.zeros((out_features,)), self.backend)
        self.reset_parameters()

    def reset_parameters(self, nonlinearity: str | None = None) -> None:
        std = init_std(self.init, self.in_features, self.out_features, nonlinearity)
        self.W.data[...] = normal_weights(self.backend, self.W.shape, std)
        self.b.data[...] = 0

    def forward(self, x: Array) -> Array:
        self.check_input(x, (None, self.in_features))
        self.x = x
        y = self.backend.matmul(x, self.W.data)
        self.backend.add_bias(y, self.b.data)
        return self.output(y)

    def backward(self, dout: Array) -> Array:
        self.backward_params(dout)
        return self.backend.matmul(dout, self.W.data.T)

    def backward_params(self, dout: Array) -> None:
        self.check_grad(dout)
        self.backend.matmul(self.x.T, dout, out=self.W.grad)
        self.backend.bias_grad(dout, self.b.grad)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"
