"""Sequential: a stack of layers that is itself a layer, with training, saving and a summary."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from backprop.backends import Backend
from backprop.checkpoint import ArraySpec, CheckpointError, check_arrays, load_arrays, save_arrays
from backprop.layers.activations import ReLU, Sigmoid, Softmax, Tanh
from backprop.layers.base import Layer
from backprop.layers.pool import ReLUMaxPool2D
from backprop.module import Module
from backprop.parameter import Parameter
from backprop.training import evaluate, fit, predict

_NONLINEARITIES = {ReLU: "relu", ReLUMaxPool2D: "relu", Sigmoid: "sigmoid", Tanh: "tanh", Softmax: "softmax"}
CHECKPOINT_FORMAT = "backprop.weights/1"


def _method(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function(model, ...)`` as a method, so that ``help(Sequential.fit)`` shows the real arguments."""
    @functools.wraps(function)
    def method(self: Sequential, *args: Any, **kwargs: Any) -> Any:
        return function(self, *args, **kwargs)
    first, *rest = inspect.signature(function).parameters.values()
    method.__signature__ = inspect.signature(function).replace(  # type: ignore[attr-defined]
        parameters=[first.replace(name="self", annotation=inspect.Parameter.empty), *rest])
    return method


def _flat(layers: list[Layer]) -> list[Layer]:
    """``layers`` with those of nested Sequentials in their place."""
    return [m for layer in layers for m in layer.modules() if isinstance(m, Layer) and not isinstance(m, Sequential)]


def _next_nonlinearity(following: list[Layer]) -> str | None:
    """The activation a weighted layer feeds, given the layers after it: looking past pooling,
    reshaping, dropout and normalization but not past another weighted layer (None: none follows)."""
    for layer in following:
        if type(layer) in _NONLINEARITIES:
            return _NONLINEARITIES[type(layer)]
        if layer.init is not None:
            return None
    return None


class Sequential(Layer):
    """Layers applied in order; ``backward`` runs them in reverse.

    On construction, every layer built with ``init="auto"`` gets its weights drawn for the
    nonlinearity it feeds (looking into a nested Sequential that follows it): He before a ReLU (or a
    ReLUMaxPool2D), Glorot otherwise. The layers of a nested Sequential keep the weights they have, so a trained block
    can be wrapped. All layers must share one backend.
    """

    def __init__(self, *layers: Layer) -> None:
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes layers, got {type(layer).__name__}")
        backends = {(layer.backend.name, layer.backend.dtype) for layer in layers}
        if len(backends) > 1:
            raise ValueError(f"layers live on different backends {sorted(backends, key=str)}: build them "
                             "under one use_backend(...) or move them with layer.to(...)")
        super().__init__(layers[0].backend)
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if layer.init == "auto":
                layer.reset_parameters(_next_nonlinearity(_flat(self.layers[i + 1:])))

    # -- the layer contract ---------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout: Any) -> Any:
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def backward_params(self, dout: Any) -> None:
        """Backward for training: gradients of the parameters only. Layers in front of the first one
        with parameters (a Flatten, say) need no gradient, and neither does that first layer's input:
        both are skipped (for a Conv2D first layer that saves a GEMM and a whole col2im per step; for
        an MLP behind a Flatten, its largest GEMM)."""
        first = next((i for i, layer in enumerate(self.layers) if layer.parameters()), None)
        if first is None:
            return
        for layer in reversed(self.layers[first + 1:]):
            dout = layer.backward(dout)
        self.layers[first].backward_params(dout)

    def named_parameters(self) -> dict[str, Parameter]:
        return {f"{i}.{name}": p for i, layer in enumerate(self.layers)
                for name, p in layer.named_parameters().items()}

    def named_buffers(self) -> dict[str, Any]:
        return {f"{i}.{name}": b for i, layer in enumerate(self.layers)
                for name, b in layer.named_buffers().items()}

    def modules(self) -> Iterator[Module]:
        yield self
        for layer in self.layers:
            yield from layer.modules()

    def train(self, mode: bool = True) -> Sequential:
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def to(self, backend: str | Backend | None = None, dtype: Any = None) -> Sequential:
        """Move every layer (parameters, optimizer state, buffers) to ``backend`` / ``dtype``."""
        for layer in self.layers:
            layer.to(backend, dtype)
        self.backend = self.layers[0].backend
        return self

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def extra_repr(self) -> str:
        return "\n" + "".join(f"  ({i}): {layer!r}\n" for i, layer in enumerate(self.layers))

    # -- inspection -----------------------------------------------------------------------------
    def summary(self, input_shape: tuple[int, ...]) -> str:
        """A table of layers, output shapes and parameter counts for inputs of ``input_shape``
        (without the batch axis); computed by one forward pass of a zero batch of one."""
        x = self.backend.zeros((1, *input_shape))
        was_training = self.training
        self.eval()
        rows = [("Layer", "Output shape", "Params")]
        try:
            for i, layer in enumerate(self.layers):
                x = layer.forward(x)
                count = sum(p.size for p in layer.parameters())
                rows.append((f"{i}: {layer!r}", str(("N", *x.shape[1:])), f"{count:,}"))
        finally:
            self.train(was_training)
        total = sum(p.size for p in self.parameters())
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        lines = ["  ".join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in
                           enumerate(zip(row, widths, strict=True))) for row in rows]
        rule = "-" * len(lines[0])
        return "\n".join([lines[0], rule, *lines[1:], rule,
                          f"Total parameters: {total:,} ({self.backend.dtype.name}, "
                          f"backend {self.backend.name!r})"])

    # -- persistence ----------------------------------------------------------------------------
    def _layer_names(self) -> list[str]:
        return [type(layer).__name__ for layer in self.layers]

    def state_arrays(self) -> dict[str, Any]:
        """Every parameter and buffer by name (backend arrays, not copies)."""
        return {**{k: p.data for k, p in self.named_parameters().items()}, **self.named_buffers()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights and buffers to ``path`` (.npz, no pickle), atomically."""
        meta = {"format": CHECKPOINT_FORMAT, "layers": self._layer_names()}
        return save_arrays(path, self.state_dict(), meta)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter and buffer, by name."""
        return {k: np.array(self.backend.to_numpy(v)) for k, v in self.state_arrays().items()}

    def load_state_dict(self, arrays: dict[str, np.ndarray], layers: list[str] | None = None,
                        source: str | os.PathLike = "state dict") -> Sequential:
        """Put ``arrays`` (from :meth:`state_dict`) into the model, after checking the layer names
        (``layers``, when the source recorded them) and every array's name, shape and dtype; on any
        mismatch raise :class:`CheckpointError` naming ``source`` and leave the model unchanged."""
        check_arrays(source, arrays, self._expect(layers, source))
        for name, target in self.state_arrays().items():
            target[...] = self.backend.asarray(arrays[name])
        return self

    def load(self, path: str | os.PathLike) -> Sequential:
        """Read weights saved by :meth:`save`; on any mismatch raise and leave the model unchanged."""
        def expect(meta: dict[str, Any]) -> dict[str, ArraySpec]:
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
            return self._expect(meta.get("layers"), path)

        arrays, meta = load_arrays(path, expect)  # checked against this model before any array is read
        return self.load_state_dict(arrays, meta.get("layers"), path)

    def _expect(self, layers: list[str] | None, source: str | os.PathLike) -> dict[str, ArraySpec]:
        """The name, shape and dtype of every state array, once the saved ``layers`` (if known) match."""
        if layers is not None and layers != self._layer_names():
            raise CheckpointError(f"{source}: saved from layers {layers}, this model has {self._layer_names()}")
        return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in self.state_arrays().items()}

    # -- training: backprop.training's functions as methods, with their signatures and docstrings ---
    fit = _method(fit)
    evaluate = _method(evaluate)
    predict = _method(predict)

