"""2-D convolution on NCHW images, lowered to one matrix product through im2col / col2im."""

from __future__ import annotations

from typing import Any

from backprop.backends import Backend
from backprop.init import InitSpec, init_std, normal_weights
from backprop.kernels.reference import conv_output_size
from backprop.layers.base import Layer, as_pair, check_positive_int
from backprop.parameter import Parameter


def check_window_fits(layer: Layer, x: Any, kernel: tuple[int, int], pad: tuple[int, int]) -> None:
    """A window larger than the padded image would give an empty output: say so instead."""
    h, w = x.shape[2:]
    if h + 2 * pad[0] < kernel[0] or w + 2 * pad[1] < kernel[1]:
        raise ValueError(f"{type(layer).__name__}: a {kernel[0]}x{kernel[1]} window does not fit in a "
                         f"{h}x{w} input padded by {pad}")


class Conv2D(Layer):
    """Convolution with ``W`` of shape (out_channels, in_channels, kh, kw) and ``b`` of shape (out,)."""

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

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        return (conv_output_size(h, self.kernel_size[0], self.stride[0], self.pad[0]),
                conv_output_size(w, self.kernel_size[1], self.stride[1], self.pad[1]))

    def forward(self, x: Any) -> Any:
        self.check_input(x, (None, self.in_channels, None, None))
        check_window_fits(self, x, self.kernel_size, self.pad)
        n = x.shape[0]
        oh, ow = self.output_hw(*x.shape[2:])
        self.x_shape = x.shape
        self.col = self.backend.im2col(x, self.kernel_size, self.stride, self.pad)  # (N*OH*OW, CKK)
        # One (O, CKK) @ (CKK, OH*OW) product per image (a batched matmul), so the output is NCHW and
        # contiguous as it comes: no transposed copy, and backward's reshape to (N, O, OH*OW) is free.
        # With im2col's column-major patch matrix the per-image operands are views, not copies.
        out = self.backend.matmul(self.W.data.reshape(self.out_channels, -1),
                                  self.col.reshape(n, oh * ow, -1).transpose(0, 2, 1))
        self.backend.add_bias(out, self.b.data)
        return out.reshape(n, self.out_channels, oh, ow)

    def backward(self, dout: Any) -> Any:
        self.backward_params(dout)
        # dcol[n] = W^T @ dout[n], written straight into the (CKK, N, OH*OW) layout im2col uses, so
        # that col2im adds contiguous blocks.
        n, o = dout.shape[:2]
        dout = dout.reshape(n, o, -1)
        w = self.W.data.reshape(o, -1)
        dcol = self.backend.empty((w.shape[1], n, dout.shape[2]), dtype=dout.dtype)
        self.backend.matmul(w.T, dout, out=dcol.transpose(1, 0, 2))
        dcol = dcol.reshape(w.shape[1], -1).T  # (N*OH*OW, CKK)
        return self.backend.col2im(dcol, self.x_shape, self.kernel_size, self.stride, self.pad)

    def backward_params(self, dout: Any) -> None:
        n, o = dout.shape[:2]
        dout = dout.reshape(n, o, -1)  # (N, O, OH*OW): a view of a contiguous gradient
        col = self.col.reshape(n, dout.shape[2], -1)  # (N, OH*OW, CKK)
        self.backend.bias_grad(dout, self.b.grad)
        dw = self.W.grad.reshape(o, -1)
        if col.shape[2] <= col.shape[1]:
            # dW = sum over images of dout[n] @ col[n]: per-image products, then one small sum (the
            # (N, O, CKK) partial products are no larger than dout, since CKK <= OH*OW).
            self.backend.matmul(dout, col).sum(axis=0, out=dw)
        else:
            # Few output pixels, many patch columns: one product over all rows, from an (O, N*OH*OW)
            # copy of dout, keeps the partial products from outgrowing the activations.
            dout_rows = self.backend.xp.ascontiguousarray(dout.transpose(1, 0, 2)).reshape(o, -1)
            self.backend.matmul(dout_rows, self.col, out=dw)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pad={self.pad}")
