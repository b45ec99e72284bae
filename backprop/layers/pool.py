"""Max pooling over NCHW images; padding counts as -inf, so a padded cell never wins."""

from __future__ import annotations

from backprop.backends import Array, Backend
from backprop.layers.base import Layer
from backprop.layers.window import as_pair


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

    def forward(self, x: Array) -> Array:
        self._check(x)
        y, self.argmax = self.backend.maxpool2d(x, self.kernel_size, self.stride, self.pad)
        return self.output(y)

    def _check(self, x: Array) -> None:
        """Refuse what the pooling cannot take, and keep the input's shape for backward."""
        self.check_input(x, (None, None, None, None))
        self.x_shape = x.shape

    def backward(self, dout: Array) -> Array:
        self.check_grad(dout)
        return self.backend.maxpool2d_backward(dout, self.argmax, self.x_shape, self.kernel_size,
                                               self.stride, self.pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}"


class ReLUMaxPool2D(MaxPool2D):
    """``MaxPool2D(ReLU(x))`` as one layer, for a model that has a ReLU right before max pooling.

    Max commutes with ReLU (both are monotone), so ReLU runs on the pooled maxima, a quarter of the
    full-size pass for 2x2 windows, and backward masks the pooled gradient by ``y > 0`` instead of
    running ReLU's full-size backward (see ``Backend.maxpool2d_relu``). Outputs and gradients are
    those of ``ReLU()`` then ``MaxPool2D(...)``, except that a window whose max is NaN passes no
    gradient. It counts as a ReLU for the weight initialization of the layer before it.
    """

    def forward(self, x: Array) -> Array:
        self._check(x)
        self.y, self.argmax = self.backend.maxpool2d_relu(x, self.kernel_size, self.stride, self.pad)
        return self.output(self.y)

    def backward(self, dout: Array) -> Array:
        self.check_grad(dout)
        return self.backend.maxpool2d_relu_backward(dout, self.y, self.argmax, self.x_shape, self.kernel_size,
                                                    self.stride, self.pad)
