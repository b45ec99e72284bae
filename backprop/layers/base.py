"""Layer: the explicit forward/backward contract every layer follows."""

from __future__ import annotations

from typing import Any

from backprop.backends import Array
from backprop.module import Module


class Layer(Module):
    """``forward(x)`` keeps what ``backward`` needs; ``backward(dout)`` fills ``p.grad`` and returns dx.

    Layers with weights take ``init`` ("auto", "he", "glorot" or a std); with "auto",
    :class:`~backprop.Sequential` redraws them for the nonlinearity that follows (He before ReLU).
    """

    init: Any = None

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

    def check_input(self, x: Array, expected: tuple[int | None, ...]) -> None:
        """Refuse an input of another backend, dtype or shape; ``None`` in ``expected`` matches any size."""
        params = self.parameters()
        self.backend.check_array(x, f"{type(self).__name__} input", params[0].dtype if params else None)
        if x.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, x.shape, strict=True)):
            shape = "(" + ", ".join("N" if i == 0 and e is None else "*" if e is None else str(e)
                                    for i, e in enumerate(expected)) + ")"
            raise ValueError(f"{type(self).__name__} expected input of shape {shape}, "
                             f"got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
