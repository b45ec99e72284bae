"""Max pooling over NCHW images; padding counts as -inf, so a padded cell never wins."""

from __future__ import annotations

from typing import Any

from backprop.backends import Backend
from backprop.layers.base import Layer
from backprop.layers.window import as_pair, check_window_fits


class MaxPool2D(Layer):
    """Max over each ``kernel_size`` window, moving by ``stride`` (default: the kernel size)."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 pad: int | tuple[int, int] = 0, *, backend: str | Backend | None = None) -> None:
        super().__init__(backend)
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_pair(stride, "stride")
        self.pad = as_pair(pad, "pad", minimum=0)
        if self.pad[0] * 2 > self.kernel_size[0] or self.pad[1] * 2 > self.kernel_size[1]:
            raise ValueError(f"pad {self.pad} must be at most half of kernel_size {self.kernel_size}, "
                             "or some windows would hold padding only")

    def forward(self, x: Any) -> Any:
        self._check(x)
        self.y, self.argmax = self.backend.maxpool2d(x, self.kernel_size, self.stride, self.pad)
        return self.y

    def forward_through_relu(self, x: Any) -> Any:
        """This pooling of ReLU(x): the forward of the ReLU that feeds this layer folded into this one
        (see ``Backend.maxpool2d_relu``); Sequential uses it for that pair, with ``backward_through_relu``."""
        self._check(x)
        self.y, self.argmax = self.backend.maxpool2d_relu(x, self.kernel_size, self.stride, self.pad)
        return self.y

    def _check(self, x: Any) -> None:
        self.check_input(x, (None, None, None, None))
        check_window_fits(self, x, self.kernel_size, self.pad)
        self.x_shape = x.shape

    def backward(self, dout: Any) -> Any:
        return self.backend.maxpool2d_backward(dout, self.argmax, self.x_shape, self.kernel_size,
                                               self.stride, self.pad)

    def backward_through_relu(self, dout: Any) -> Any:
        """The gradient w.r.t. the input of the ReLU that feeds this layer: ReLU's backward folded
        into this one (see ``Backend.maxpool2d_relu_backward``); Sequential uses it for that pair."""
        return self.backend.maxpool2d_relu_backward(dout, self.y, self.argmax, self.x_shape, self.kernel_size,
                                                    self.stride, self.pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}"
