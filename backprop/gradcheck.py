"""Numerical gradient checking: compare a layer's or a loss's ``backward`` with central differences.

The check runs on a float64 copy of the module (the original is left as it was), so rounding does not
hide or fake an error. For a layer the scalar being differentiated is sum(forward(x) * w) with a fixed
random w, so every output element matters; for a loss it is the loss itself. The float64 backend's
generator is re-seeded with ``seed`` before every forward pass, so stochastic layers (Dropout) draw the
same mask each time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backprop.layers.base import Layer
from backprop.losses import Loss
from backprop.module import Module


@dataclass
class GradcheckResult:
    """Worst relative error of each checked array ("input" and parameter names), and overall."""

    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_rel_error(self) -> float:
        """The worst error; NaN if any is NaN (Python's max would skip it), so a check against it fails."""
        return float(np.max(list(self.errors.values()))) if self.errors else 0.0

    def __str__(self) -> str:
        parts = ", ".join(f"{k}: {v:.2e}" for k, v in self.errors.items())
        return f"gradcheck max relative error {self.max_rel_error:.2e} ({parts})"


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-8) -> float:
    """max |a - n| / max(|a| + |n|, floor) over all elements."""
    denom = np.maximum(np.abs(analytic) + np.abs(numeric), floor)
    return float((np.abs(analytic - numeric) / denom).max(initial=0.0))


def gradcheck(module: Module, x: Any, target: Any = None, *, eps: float = 1e-6, seed: int = 0,
              check_params: bool = True) -> GradcheckResult:
    """Check ``module``'s backward numerically in float64 and return the worst relative errors.

    ``module`` is a :class:`Layer` (call as ``gradcheck(layer, x)``) or a :class:`Loss` (call as
    ``gradcheck(loss, pred, target)``). With ``check_params`` the parameters' gradients are checked
    too. Around 1e-7 or below means the backward pass is right; kinks (ReLU at 0, max-pool ties) can
    give large errors on unlucky inputs, so draw inputs away from them.
    """
    if not isinstance(module, (Layer, Loss)):
        raise TypeError(f"gradcheck takes a Layer or a Loss, got {type(module).__name__}")
    m = copy.deepcopy(module)
    m.to(dtype=np.float64)
    backend = m.backend
    x = backend.asarray(x, dtype=np.float64).copy()
    if target is not None:
        target = backend.asarray(target)
    out_weights: dict[tuple[int, ...], Any] = {}

    def weights_for(out: Any) -> Any:
        if out.shape not in out_weights:
            rng = np.random.default_rng(seed)
            out_weights[out.shape] = backend.asarray(rng.standard_normal(out.shape))
        return out_weights[out.shape]

    def forward() -> Any:
        backend.seed(seed)
        return m.forward(x, target) if isinstance(m, Loss) else m.forward(x)

    def scalar() -> float:
        out = forward()
        return float(out) if isinstance(m, Loss) else float((out * weights_for(out)).sum())

    out = forward()
    dx = m.backward() if isinstance(m, Loss) else m.backward(weights_for(out))
    analytic = {"input": backend.to_numpy(dx).copy()}
    arrays = {"input": x}
    if check_params:
        for name, p in m.named_parameters().items():
            analytic[name] = backend.to_numpy(p.grad).copy()
            arrays[name] = p.data
    result = GradcheckResult()
    for name, arr in arrays.items():
        numeric = np.empty(arr.shape)
        flat = arr.reshape(-1)
        for i in range(flat.size):
            orig = float(flat[i])
            flat[i] = orig + eps
            plus = scalar()
            flat[i] = orig - eps
            minus = scalar()
            flat[i] = orig
            numeric.reshape(-1)[i] = (plus - minus) / (2 * eps)
        result.errors[name] = relative_error(analytic[name], numeric)
    return result
