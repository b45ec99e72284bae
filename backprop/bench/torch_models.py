"""The zoo's networks in PyTorch, with backprop's initial weights, trained the way PyTorch users do.

PyTorch is optional: this module imports it only when a function here is called, in the benchmark's
PyTorch subprocess. A zoo model maps layer by layer (a ``ReLUMaxPool2D`` becomes ReLU then max pooling,
a ``Linear(activation="relu")`` Linear then ReLU; Dropout keeps its rate, though its random masks differ
from backprop's).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from backprop.layers import Conv2D, Dropout, Flatten, Linear, MaxPool2D, ReLU, ReLUMaxPool2D
from backprop.model import Sequential

# row name -> (device, CUDA graphs)
TORCH_ROWS = {"torch": ("cpu", False), "torch-cuda": ("cuda", False), "torch-cuda-graph": ("cuda", True)}


def torch_model(ours: Sequential) -> Any:
    """The same network as ``ours`` in PyTorch, holding ``ours``'s weights (torch's Linear weight is (out, in))."""
    import torch

    nn = torch.nn
    get = ours.backend.to_numpy
    layers: list[Any] = []
    m: Any  # a torch module with weights
    for layer in ours.layers:
        if isinstance(layer, Conv2D):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.pad)
            w = get(layer.W.data)
        elif isinstance(layer, Linear):
            m = nn.Linear(*layer.W.data.shape)
            w = get(layer.W.data).T
        elif isinstance(layer, MaxPool2D):
            relu = [nn.ReLU()] if isinstance(layer, ReLUMaxPool2D) else []
            layers += [*relu, nn.MaxPool2d(layer.kernel_size, layer.stride, layer.pad)]
            continue
        elif isinstance(layer, ReLU):
            layers.append(nn.ReLU())
            continue
        elif isinstance(layer, Flatten):
            layers.append(nn.Flatten())
            continue
        elif isinstance(layer, Dropout):
            layers.append(nn.Dropout(layer.p))
            continue
        else:
            raise TypeError(f"no PyTorch counterpart for {type(layer).__name__}")
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
            m.bias.copy_(torch.from_numpy(get(layer.b.data).astype(np.float32)))
        layers.append(m)
        if getattr(layer, "activation", None) == "relu":  # Linear(activation="relu"): the pair in one layer
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TorchTrainer:
    """PyTorch's training step (zero_grad, forward, cross-entropy, backward, Adam) on the CPU with every
    core, or on CUDA, eager or replaying a captured CUDA graph. Batches are moved to the device by
    :meth:`batches` before any clock starts."""

    def __init__(self, row: str) -> None:
        import torch

        self.torch = torch
        self.device, self.graphs = TORCH_ROWS[row]
        torch.set_num_threads(os.cpu_count() or 1)
        self.sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        self.graph: Any = None

    def open_device(self) -> None:
        """The CUDA context (timed apart from the cold start)."""
        if self.device == "cuda":
            self.torch.zeros(1, device=self.device)

    def batches(self, host_batches: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[Any, Any]]:
        t = self.torch
        return [(t.from_numpy(x).to(self.device), t.from_numpy(y.astype(np.int64)).to(self.device))
                for x, y in host_batches]

    def build(self, ours: Sequential, lr: float) -> None:
        self.model = torch_model(ours).to(self.device)
        # a captured graph needs the optimizer's step counter on the device
        self.opt = self.torch.optim.Adam(self.model.parameters(), lr=lr, capturable=self.graphs)
        self.loss_fn = self.torch.nn.CrossEntropyLoss()

    def _eager(self, x: Any, y: Any) -> None:
        self.opt.zero_grad(set_to_none=not self.graphs)  # a graph keeps the same gradient buffers
        self.loss_fn(self.model(x), y).backward()
        self.opt.step()

    def step(self, x: Any, y: Any) -> None:
        if not self.graphs:
            self._eager(x, y)
            return
        if self.graph is None:
            self._capture(x, y)
        if x.shape != self.static_x.shape:  # a partial last batch runs eagerly, as backprop's graphs do
            self._eager(x, y)
            return
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()

    def _capture(self, x: Any, y: Any) -> None:
        """CUDA's recipe: three eager steps on a side stream (they train, on this batch), then one
        step captured without running it."""
        torch = self.torch
        self.static_x, self.static_y = x.clone(), y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._eager(self.static_x, self.static_y)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._eager(self.static_x, self.static_y)

    def evaluate(self, batches: list[tuple[Any, Any]]) -> dict[str, float]:
        correct, n, total = 0, 0, 0.0
        self.model.eval()
        with self.torch.no_grad():
            for x, y in batches:
                out = self.model(x)
                total += float(self.loss_fn(out, y)) * len(y)
                correct += int((out.argmax(1) == y).sum())
                n += len(y)
        self.model.train()
        return {"accuracy": correct / n, "loss": total / n}

    def extra(self) -> dict[str, Any]:
        """Version, threads, and on CUDA the GPU and the peak memory the caching allocator reserved."""
        info: dict[str, Any] = {"torch_version": self.torch.__version__, "torch_threads": self.torch.get_num_threads()}
        if self.device == "cuda":
            info["peak_gpu_mb"] = self.torch.cuda.max_memory_reserved() / 2**20
            info["gpu"] = self.torch.cuda.get_device_name()
        return info
