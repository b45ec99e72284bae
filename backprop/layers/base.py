"""Layer: the explicit forward/backward contract every layer follows."""

from __future__ import annotations

from typing import Any

from backprop.backends import Array
from backprop.module import Module


class Layer(Module):
    """``forward(x)`` keeps what ``backward`` needs; ``backward(dout)`` fills ``p.grad`` and returns dx.

    Layers with weights take ``init`` ("auto", "he", "glorot" or a std); with "auto",
    :class:`~backprop.Sequential` redraws them for the nonlinearity that follows (He before ReLU).

    Every layer checks its input in ``forward`` (:meth:`check_input`) and the gradient in ``backward``
    against the output's shape and dtype (:meth:`output` keeps them, :meth:`check_grad` compares):
    metadata only, so the checks never wait for a GPU. An empty batch (N = 0) goes through as an empty
    output and zero parameter gradients.
    """

    init: Any = None
    _output: tuple[tuple[int, ...], Any] | None = None  # the last output's shape and dtype

    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, dout: Array) -> Array:
        raise NotImplementedError

    def backward_params(self, dout: Array) -> None:
        """Fill the parameters' gradients only: for a first layer, whose input gradient nobody uses.
        Layers with weights override this to skip computing dx (a GEMM, and col2im for Conv2D)."""
        self.backward(dout)

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def reset_parameters(self, nonlinearity: str | None = None) -> None:
        """Redraw the weights (zero the biases) for the given following nonlinearity."""

    def check_input(self, x: Array, expected: tuple[int | None, ...] | None = None) -> None:
        """Refuse an input of another backend, dtype (the parameters', or float32 or float64 for a layer
        without any; native byte order) or shape; ``None`` in ``expected`` matches any size, and no
        ``expected`` any shape."""
        name = type(self).__name__
        params = self.parameters()
        self.backend.check_array(x, f"{name} input", params[0].dtype if params else None, model_dtype=True)
        if expected is None:
            return
        if x.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, x.shape, strict=True)):
            shape = "(" + ", ".join("N" if i == 0 and e is None else "*" if e is None else str(e)
                                    for i, e in enumerate(expected)) + ")"
            raise ValueError(f"{name} expected input of shape {shape}, got {tuple(x.shape)}")

    def output(self, y: Array) -> Array:
        """Keep the shape and dtype of forward's output ``y``, which backward's gradient must have;
        returns ``y``."""
        self._output = (tuple(y.shape), y.dtype)
        return y

    def check_grad(self, dout: Array) -> None:
        """Refuse a gradient of another backend, dtype or shape than the last forward's output (a
        transposed or reduced gradient would otherwise give wrong parameter gradients, or fail deep
        in a kernel)."""
        name = type(self).__name__
        if self._output is None:
            raise RuntimeError(f"{name}.backward() needs a forward() first")
        shape, dtype = self._output
        self.backend.check_array(dout, f"{name} gradient", dtype)
        if tuple(dout.shape) != shape:
            raise ValueError(f"{name} backward expected a gradient of the output's shape {shape}, "
                             f"got {tuple(dout.shape)}")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
