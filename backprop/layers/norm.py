"""Batch normalization: normalize each feature (or channel) over the batch, then scale and shift.

Training uses the batch's statistics and updates the running ones as PyTorch does:
running = (1 - momentum) * running + momentum * batch, with the unbiased variance. Inference uses the
running statistics.
"""

from __future__ import annotations

from backprop.backends import Array, Backend
from backprop.checks import check_number, check_positive_int
from backprop.layers.base import Layer
from backprop.parameter import Parameter


class _BatchNorm(Layer):
    buffer_names = ("running_mean", "running_var")
    axes: tuple[int, ...] = ()
    ndim = 0

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, *,
                 backend: str | Backend | None = None) -> None:
        super().__init__(backend)
        self.num_features = check_positive_int(num_features, "num_features")
        self.momentum = check_number(momentum, "momentum", lambda v: 0 <= v <= 1, "in [0, 1]")
        self.eps = check_number(eps, "eps", lambda v: v > 0, "positive and finite")
        b = self.backend
        self.gamma = Parameter(b.xp.ones(num_features, dtype=b.dtype), b)
        self.beta = Parameter(b.zeros((num_features,)), b)
        self.running_mean = b.zeros((num_features,))
        self.running_var = b.xp.ones(num_features, dtype=b.dtype)

    def _shaped(self, v: Array) -> Array:
        """A per-feature vector reshaped to broadcast against the input."""
        shape = [1] * self.ndim
        shape[1] = self.num_features
        return v.reshape(shape)

    def forward(self, x: Array) -> Array:
        self.check_input(x, (None, self.num_features) + (None,) * (self.ndim - 2))
        self.input_shape = tuple(x.shape)  # fit reads it: can a batch of one sample be normalized?
        if self.training:
            count = x.size // self.num_features
            if count < 2:
                raise ValueError(f"{type(self).__name__} needs more than one value per feature when "
                                 f"training, got input of shape {tuple(x.shape)}")
            mean = x.mean(axis=self.axes)
            var = x.var(axis=self.axes)
            m = self.momentum
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += (m * count / (count - 1)) * var
        else:
            mean, var = self.running_mean, self.running_var
        self.inv_std = 1.0 / self.backend.xp.sqrt(self._shaped(var) + self.eps)
        self.xhat = (x - self._shaped(mean)) * self.inv_std
        return self.output(self.xhat * self._shaped(self.gamma.data) + self._shaped(self.beta.data))

    def backward(self, dout: Array) -> Array:
        self.check_grad(dout)
        self.beta.grad[...] = dout.sum(axis=self.axes)
        self.gamma.grad[...] = (dout * self.xhat).sum(axis=self.axes)
        dxhat = dout * self._shaped(self.gamma.data)
        if not self.training:
            return dxhat * self.inv_std
        mean_dxhat = dxhat.mean(axis=self.axes, keepdims=True)
        mean_dxhat_xhat = (dxhat * self.xhat).mean(axis=self.axes, keepdims=True)
        return (dxhat - mean_dxhat - self.xhat * mean_dxhat_xhat) * self.inv_std

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"


class BatchNorm1D(_BatchNorm):
    """BatchNorm over (N, num_features) inputs."""

    axes = (0,)
    ndim = 2


class BatchNorm2D(_BatchNorm):
    """BatchNorm over (N, num_channels, H, W) inputs, one mean and variance per channel."""

    axes = (0, 2, 3)
    ndim = 4

    def __init__(self, num_channels: int, momentum: float = 0.1, eps: float = 1e-5, *,
                 backend: str | Backend | None = None) -> None:
        super().__init__(num_channels, momentum, eps, backend=backend)
