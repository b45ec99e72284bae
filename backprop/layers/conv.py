"""2-D convolution on NCHW images, lowered by the backend to one matrix product through im2col / col2im."""

from __future__ import annotations

from backprop.backends import Array, Backend
from backprop.checks import check_positive_int
from backprop.init import InitSpec, init_std, normal_weights
from backprop.layers.base import Layer
from backprop.layers.window import as_pair
from backprop.parameter import Parameter


class Conv2D(Layer):
    """Convolution with ``W`` of shape (out_channels, in_channels, kh, kw) and ``b`` of shape (out,).

    The arithmetic is the backend's (``conv2d_forward`` / ``conv2d_backward``: im2col, a matrix
    product, col2im), so that each backend can lay out its products for speed; this layer keeps the
    parameters and what backward needs."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] = 0, *,
                 init: InitSpec = "auto", backend: str | Backend | None = None) -> None:
        super().__init__(backend)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.pad = as_pair(pad, "pad", minimum=0)
        self.init = init
        kh, kw = self.kernel_size
        self.W = Parameter(self.backend.zeros((out_channels, in_channels, kh, kw)), self.backend)
        self.b = Parameter(self.backend.zeros((out_channels,)), self.backend)
        self.reset_parameters()

    def reset_parameters(self, nonlinearity: str | None = None) -> None:
        area = self.kernel_size[0] * self.kernel_size[1]
        std = init_std(self.init, self.in_channels * area, self.out_channels * area, nonlinearity)
        self.W.data[...] = normal_weights(self.backend, self.W.shape, std)
        self.b.data[...] = 0

    def forward(self, x: Array) -> Array:
        self.check_input(x, (None, self.in_channels, None, None))
        out, self.cache = self.backend.conv2d_forward(x, self.W.data, self.b.data, self.stride, self.pad)
        return self.output(out)

    def backward(self, dout: Array) -> Array:
        self.check_grad(dout)
        return self.backend.conv2d_backward(dout, self.cache, self.W.data, self.W.grad, self.b.grad)

    def backward_params(self, dout: Array) -> None:
        self.check_grad(dout)
        self.backend.conv2d_backward(dout, self.cache, self.W.data, self.W.grad, self.b.grad, need_dx=False)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pad={self.pad}")
