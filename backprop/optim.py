"""Optimizers over a model's ``parameters()``; their state lives on each Parameter's backend.

Each optimizer reads ``p.grad`` and updates ``p.data`` in place through its backend's update kernel.
A step has two halves: :meth:`Optimizer.begin_step` on the host counts the step and writes the values
that change from step to step (the learning rate, Adam's bias corrections) into device memory, and
:meth:`Optimizer.apply` launches the updates, which read them there. A CUDA graph captures ``apply``
once and replays it after each ``begin_step``, so schedules and Adam's corrections keep working.
``weight_decay`` adds ``weight_decay * p`` to the gradient (L2), except in AdamW, where it is
decoupled; ``clip_norm`` rescales all gradients together when their global norm exceeds it.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

from backprop.backends import Array
from backprop.checks import check_fraction, check_number
from backprop.kernels.reference import adam_scalars
from backprop.parameter import Parameter


def clip_grad_norm(params: Iterable[Parameter], max_norm: float) -> Array:
    """Scale gradients so their global L2 norm is at most ``max_norm``; returns the norm before, as a
    0-d backend array. Computed on the device with no host read, so a training step never waits."""
    params = list(params)
    xp = params[0].backend.xp
    total = xp.sqrt(sum((p.grad * p.grad).sum() for p in params))
    scale = xp.where(total > max_norm, max_norm / (total + 1e-12), 1.0).astype(total.dtype)
    for p in params:
        p.grad *= scale
    return total


class Optimizer:
    # The arrays update() keeps per parameter; None (a subclass that does not say) saves and loads
    # whatever is there.
    state_names: tuple[str, ...] | None = None

    def __init__(self, params: Iterable[Parameter], lr: float, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got no parameters to optimize")
        if not all(isinstance(p, Parameter) for p in self.params):
            raise TypeError("optimizers take Parameters: pass model.parameters()")
        # Python floats, so NumPy scalars never upcast float32 updates
        self.lr = check_number(lr, "learning rate", lambda v: v > 0, "positive and finite")
        self.weight_decay = check_number(weight_decay, "weight_decay", lambda v: v >= 0, "finite and >= 0")
        self.clip_norm = None if clip_norm is None else check_number(clip_norm, "clip_norm", lambda v: v > 0,
                                                                      "positive and finite")
        self.steps = 0
        self._scalars: dict[tuple[str, np.dtype], dict[str, Array]] = {}  # (backend, dtype) -> name -> 0-d array

    def step(self) -> None:
        """Apply one update from the gradients that the last backward pass left in ``p.grad``."""
        self.begin_step()
        self.apply()

    def step_scalars(self) -> dict[str, float]:
        """This step's values that change from step to step, by name (the update kernels' step scalars)."""
        return {"lr": self.lr}

    def begin_step(self) -> None:
        """The host's half of a step: count it and write :meth:`step_scalars` into device memory, in each
        dtype the parameters have (a fill per value: no host read, and in order with the device's work)."""
        self.steps += 1
        values = self.step_scalars()
        stores = {}  # one per (backend, dtype) of the parameters now (a model may have moved since)
        for p in self.params:
            key = (p.backend.name, p.dtype)
            if key not in stores:
                stores[key] = self._scalars.get(key) or self._store(p, values)
        self._scalars = stores
        for views in stores.values():
            for name, value in values.items():
                views[name].fill(value)

    @staticmethod
    def _store(p: Parameter, values: dict[str, float]) -> dict[str, Array]:
        """0-d views, one per step scalar, into one new array on ``p``'s backend in its dtype."""
        store = p.backend.zeros((len(values),), dtype=p.dtype)
        return {name: store[i, ...] for i, name in enumerate(values)}

    def apply(self) -> None:
        """The device's half of a step: clip, then update every parameter (no host read, no allocation
        that outlives the step: what a CUDA graph captures)."""
        if self.clip_norm is not None:
            clip_grad_norm(self.params, self.clip_norm)
        for p in self.params:
            self.update(p, self.decayed_grad(p))

    def scalar(self, name: str, p: Parameter) -> Array:
        """The step scalar ``name`` of this step in ``p``'s dtype: a 0-d array on ``p``'s backend."""
        return self._scalars[p.backend.name, p.dtype][name]

    def decayed_grad(self, p: Parameter) -> Array:
        return p.grad + self.weight_decay * p.data if self.weight_decay else p.grad

    def update(self, p: Parameter, grad: Array) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad[...] = 0

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: ``lr``, ``steps`` and host copies of every parameter's state
        arrays, keyed "INDEX.NAME" by the parameter's position in ``params``."""
        arrays = {f"{i}.{k}": np.array(p.backend.to_numpy(v)) for i, p in enumerate(self.params)
                  for k, v in p.state.items() if self.state_names is None or k in self.state_names}
        return {"type": type(self).__name__, "lr": self.lr, "steps": self.steps, "state": arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; everything is checked before anything changes: every
        array must be finite, of its parameter's shape and dtype, and (where the class declares
        :attr:`state_names`) after any step every parameter needs exactly those."""
        if state.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {state.get('type')}, not {type(self).__name__}")
        lr = check_number(state.get("lr"), "the saved learning rate", lambda v: v >= 0, "finite and >= 0")
        steps = state.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"the saved step count must be an int >= 0, got {steps!r}")
        names = self.state_names
        staged: dict[int, dict[str, Any]] = {}
        for key, a in state["state"].items():
            index, _, name = key.partition(".")
            if not index.isdigit() or int(index) >= len(self.params) or not name or (
                    names is not None and name not in names):
                raise ValueError(f"optimizer state {key!r} is not one of {type(self).__name__}'s "
                                 f"({', '.join(names or ()) or 'it keeps none'}) for {len(self.params)} "
                                 "parameters")
            p = self.params[int(index)]
            if tuple(a.shape) != p.shape or a.dtype != p.dtype:
                raise ValueError(f"optimizer state {key!r} is {a.dtype} {tuple(a.shape)}, its parameter "
                                 f"{p.dtype} {p.shape} (load the state before model.to(dtype=...), which "
                                 "converts it too)")
            if not np.isfinite(a).all():
                raise ValueError(f"optimizer state {key!r} holds NaN or inf")
            staged.setdefault(int(index), {})[name] = a
        wanted = set(names) if steps and names is not None else set()
        for i in range(len(self.params) if names is not None else 0):
            if set(staged.get(i, {})) != wanted:
                raise ValueError(f"optimizer state of parameter {i} holds {sorted(staged.get(i, {}))}; after "
                                 f"{steps} steps {type(self).__name__} keeps {sorted(wanted)}")
        for i, p in enumerate(self.params):
            p.state = {name: p.backend.asarray(a, dtype=p.dtype) for name, a in staged.get(i, {}).items()}
        self.lr = lr
        self.steps = int(steps)

    @staticmethod
    def state(p: Parameter, name: str) -> Array:
        """The state array ``name`` of ``p``, created as zeros on first use."""
        if name not in p.state:
            p.state[name] = p.backend.xp.zeros_like(p.data)
        return p.state[name]


class SGD(Optimizer):
    """Plain SGD, or with ``momentum`` (heavy ball, PyTorch's convention) and optionally Nesterov."""

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(params, lr, weight_decay, clip_norm)
        self.momentum = check_fraction(momentum, "momentum")
        if nesterov and self.momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.nesterov = nesterov

    @property
    def state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("velocity",) if self.momentum else ()

    def update(self, p: Parameter, grad: Array) -> None:
        velocity = self.state(p, "velocity") if self.momentum else None
        p.backend.sgd_update(p.data, grad, velocity, self.scalar("lr", p), self.momentum, self.nesterov)


class Momentum(SGD):
    """SGD with momentum 0.9 by default, as the classic tutorials name it."""

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        super().__init__(params, lr, momentum, nesterov, weight_decay, clip_norm)


def _positive_eps(eps: float) -> float:
    """eps keeps ``g / (sqrt(s) + eps)`` finite where a running square s is 0: a weight whose gradient
    has been 0, or decaying state that fell below the smallest normal number and is stored as 0."""
    return check_number(eps, "eps", lambda v: v > 0, "positive and finite")


class AdaGrad(Optimizer):
    state_names = ("sum_sq",)

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, eps: float = 1e-10,
                 weight_decay: float = 0.0, clip_norm: float | None = None) -> None:
        super().__init__(params, lr, weight_decay, clip_norm)
        self.eps = _positive_eps(eps)

    def update(self, p: Parameter, grad: Array) -> None:
        p.backend.adagrad_update(p.data, grad, self.state(p, "sum_sq"), self.scalar("lr", p), self.eps)


class RMSProp(Optimizer):
    state_names = ("mean_sq",)

    def __init__(self, params: Iterable[Parameter], lr: float = 0.01, rho: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, clip_norm: float | None = None) -> None:
        super().__init__(params, lr, weight_decay, clip_norm)
        self.rho = check_fraction(rho, "rho")
        self.eps = _positive_eps(eps)

    def update(self, p: Parameter, grad: Array) -> None:
        p.backend.rmsprop_update(p.data, grad, self.state(p, "mean_sq"), self.scalar("lr", p), self.rho, self.eps)


class Adam(Optimizer):
    state_names = ("m", "v")

    def __init__(self, params: Iterable[Parameter], lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, clip_norm: float | None = None) -> None:
        super().__init__(params, lr, weight_decay, clip_norm)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas!r}")
        self.betas = (check_fraction(betas[0], "betas[0]"), check_fraction(betas[1], "betas[1]"))
        self.eps = _positive_eps(eps)

    def step_scalars(self) -> dict[str, float]:
        lr_t, eps_t = adam_scalars(self.lr, *self.betas, self.eps, self.steps)
        return {"lr_t": lr_t, "eps_t": eps_t}

    def update(self, p: Parameter, grad: Array) -> None:
        p.backend.adam_update(p.data, grad, self.state(p, "m"), self.state(p, "v"), self.scalar("lr_t", p),
                              self.betas[0], self.betas[1], self.scalar("eps_t", p))


class AdamW(Adam):
    """Adam with decoupled weight decay: p <- p - lr * weight_decay * p, apart from the gradient."""

    def __init__(self, params: Iterable[Parameter], lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, clip_norm: float | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, clip_norm)

    def step_scalars(self) -> dict[str, float]:
        return {**super().step_scalars(), "decay": 1.0 - self.lr * self.weight_decay}

    def decayed_grad(self, p: Parameter) -> Array:
        if self.weight_decay:
            p.data *= self.scalar("decay", p)
        return p.grad
