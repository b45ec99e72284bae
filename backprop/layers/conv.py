"""2-D convolution on NCHW images, lowered to one matrix product through im2col / col2im."""

from __future__ import annotations

from typing import Any

from backprop.backends import Backend
from backprop.init import InitSpec, init_std, normal_weights
from backprop.kernels.reference import conv_output_size
from backprop.checks import check_positive_int
from backprop.layers.base import Layer, as_pair
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
        w = self.W.data.reshape(self.out_channels, -1)
        if self._few_pixels(oh * ow):
            # One product over all rows, (O, CKK) @ (CKK, N*OH*OW), then the bias added on the way
            # into NCHW order: with few pixels per image, per-image products are too small to pay.
            rows = self.backend.matmul(w, self.col.T).reshape(self.out_channels, n, oh * ow)
            out = self.backend.empty((n, self.out_channels, oh * ow), dtype=x.dtype)
            self.backend.xp.add(rows.transpose(1, 0, 2), self.b.data[:, None], out=out)
        else:
            # One (O, CKK) @ (CKK, OH*OW) product per image (a batched matmul), so the output is NCHW
            # and contiguous as it comes, with no transposed copy. With im2col's column-major patch
            # matrix the per-image operands are views, not copies.
            out = self.backend.matmul(w, self.col.reshape(n, oh * ow, -1).transpose(0, 2, 1))
            self.backend.add_bias(out, self.b.data)
        return out.reshape(n, self.out_channels, oh, ow)

    def _few_pixels(self, pixels: int) -> bool:
        """Fewer output pixels per image than patch columns (OH*OW < C*KH*KW): products over the whole
        batch at once beat per-image products, forward and backward (measured in bench/results/)."""
        return pixels < self.col.shape[1]

    def backward(self, dout: Any) -> Any:
        n, o = dout.shape[:2]
        dout = dout.reshape(n, o, -1)  # (N, O, OH*OW): a view of a contiguous gradient
        w = self.W.data.reshape(o, -1)
        rows = self._dout_rows(dout)
        self._param_grads(dout, rows)
        # dcol = W^T @ dout, in the (CKK, N*OH*OW) layout im2col uses, so that col2im reads it in order.
        if rows is not None:
            dcol = self.backend.matmul(w.T, rows)
        else:  # one product per image, each written straight into its place in that layout
            dcol = self.backend.empty((w.shape[1], n, dout.shape[2]), dtype=dout.dtype)
            self.backend.matmul(w.T, dout, out=dcol.transpose(1, 0, 2))
            dcol = dcol.reshape(w.shape[1], -1)
        return self.backend.col2im(dcol.T, self.x_shape, self.kernel_size, self.stride, self.pad)

    def backward_params(self, dout: Any) -> None:
        n, o = dout.shape[:2]
        dout = dout.reshape(n, o, -1)
        self._param_grads(dout, self._dout_rows(dout))

    def _dout_rows(self, dout: Any) -> Any | None:
        """dout as one (O, N*OH*OW) matrix when products over all rows at once pay, else None.

        They pay when there are few output pixels per image and many patch columns (CKK > OH*OW):
        per-image products are then small and many, and the copy of dout is small. Otherwise per-image
        products avoid the copy and keep the partial products no larger than dout."""
        n, o, pixels = dout.shape
        if not self._few_pixels(pixels):
            return None
        return self.backend.xp.ascontiguousarray(dout.transpose(1, 0, 2)).reshape(o, -1)

    def _param_grads(self, dout: Any, rows: Any | None) -> None:
        """dW and db from dout (N, O, OH*OW) and, if given, the same as one (O, N*OH*OW) matrix."""
        n, o, pixels = dout.shape
        self.backend.bias_grad(dout, self.b.grad)
        dw = self.W.grad.reshape(o, -1)
        if rows is not None:
            self.backend.matmul(rows, self.col, out=dw)
        else:  # dW = sum over images of dout[n] @ col[n]
            self.backend.matmul(dout, self.col.reshape(n, pixels, -1)).sum(axis=0, out=dw)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pad={self.pad}")
