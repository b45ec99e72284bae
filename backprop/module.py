"""Module: what layers, models and losses share: a backend, a training flag, parameters and buffers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from backprop.backends import Backend, get_backend
from backprop.parameter import Parameter


class Module:
    """Base of everything that computes on a backend.

    Parameters are the :class:`Parameter` attributes, found by looking (in definition order); buffers
    are the arrays named in ``buffer_names`` (state that is saved and moved but not trained, such as
    BatchNorm's running statistics).
    """

    buffer_names: tuple[str, ...] = ()

    def __init__(self, backend: str | Backend | None = None) -> None:
        self.backend = get_backend(backend)
        self.training = True

    def named_parameters(self) -> dict[str, Parameter]:
        return {k: v for k, v in vars(self).items() if isinstance(v, Parameter)}

    def parameters(self) -> list[Parameter]:
        return list(self.named_parameters().values())

    def named_buffers(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.buffer_names}

    def modules(self) -> Iterator[Module]:
        """This module and every module inside it (a Sequential's layers, nested ones included)."""
        yield self

    def train(self, mode: bool = True) -> Module:
        """Switch to training mode (Dropout drops, BatchNorm uses batch statistics)."""
        self.training = mode
        return self

    def eval(self) -> Module:
        """Switch to inference mode."""
        return self.train(False)

    def to(self, backend: str | Backend | None = None, dtype: Any = None) -> Module:
        """Move parameters and buffers to ``backend`` (a name or a Backend) and/or cast to ``dtype``.

        A name keeps the current dtype unless ``dtype`` is given; a Backend brings its own dtype.
        """
        if isinstance(backend, Backend):
            target = get_backend(backend, dtype)
        else:
            target = get_backend(backend or self.backend,  # no name: this backend, perhaps in another dtype
                                 self.backend.dtype if dtype is None else dtype)
        for p in self.parameters():
            p.to(target)
        for name, buf in self.named_buffers().items():
            setattr(self, name, target.asarray(buf, dtype=target.dtype))
        self.backend = target
        return self
