"""Model zoo: the classic small image classifiers, built from the public layers as ``Sequential`` models.

Each function takes the input's channels and (square) size and the number of classes, so the same
architectures serve MNIST, Fashion-MNIST or other small images; ``backend`` picks where the weights live.
A ReLU followed by max pooling is built as one :class:`~backprop.layers.ReLUMaxPool2D` layer: the same
function, with ReLU run on the pooled values.
:data:`MODELS` maps the command line's names to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from backprop.backends import Backend, use_backend
from backprop.checks import check_positive_int
from backprop.layers import Conv2D, Dropout, Flatten, Layer, Linear, ReLU, ReLUMaxPool2D
from backprop.model import Sequential


def _check_size(model: str, image_size: int, smallest: int) -> None:
    """Refuse images too small for the architecture, before its first Linear would get 0 inputs."""
    if check_positive_int(image_size, "image_size") < smallest:
        raise ValueError(f"{model} needs images of at least {smallest}x{smallest} pixels, got "
                         f"image_size={image_size!r}")


def _build(backend: str | Backend | None, make: Callable[[], list[Layer]]) -> Sequential:
    if backend is None:
        return Sequential(*make())
    with use_backend(backend):
        return Sequential(*make())


def simple_conv_net(*, in_channels: int = 1, image_size: int = 28, classes: int = 10, channels: int = 30,
                    hidden: int = 100, backend: str | Backend | None = None) -> Sequential:
    """Conv 30@5x5 - ReLU - MaxPool 2 - Linear (4320 -> 100 on 28x28 input) - ReLU - Linear (100 -> 10).
    Each ReLU is fused into the layer before it (ReLUMaxPool2D, Linear's activation)."""
    _check_size("SimpleConvNet", image_size, 6)
    pooled = (image_size - 4) // 2
    return _build(backend, lambda: [
        Conv2D(in_channels, channels, 5), ReLUMaxPool2D(2), Flatten(),
        Linear(channels * pooled * pooled, hidden, activation="relu"), Linear(hidden, classes)])


def lenet5(*, in_channels: int = 1, image_size: int = 28, classes: int = 10,
           backend: str | Backend | None = None) -> Sequential:
    """LeNet-5 in its modern form (ReLU and max pooling): Conv 6@5x5 (padded, so 28x28 works like the
    original 32x32) - pool - Conv 16@5x5 - pool - Linear 400 -> 120 -> 84 -> classes."""
    _check_size("LeNet5", image_size, 12)
    size = ((image_size // 2) - 4) // 2
    return _build(backend, lambda: [
        Conv2D(in_channels, 6, 5, pad=2), ReLUMaxPool2D(2),
        Conv2D(6, 16, 5), ReLUMaxPool2D(2), Flatten(),
        Linear(16 * size * size, 120, activation="relu"), Linear(120, 84, activation="relu"), Linear(84, classes)])


def mlp(*, in_channels: int = 1, image_size: int = 28, classes: int = 10, hidden: Sequence[int] = (100, 100),
        dropout: float = 0.0, backend: str | Backend | None = None) -> Sequential:
    """Flatten - (Linear - ReLU [- Dropout]) for each hidden width - Linear to the classes."""
    def make() -> list[Layer]:
        layers: list[Layer] = [Flatten()]
        width = in_channels * image_size * image_size
        for h in hidden:
            layers += [Linear(width, h, activation="relu")] + ([Dropout(dropout)] if dropout else [])
            width = h
        return [*layers, Linear(width, classes)]
    return _build(backend, make)


def deep_conv_net(*, in_channels: int = 1, image_size: int = 28, classes: int = 10, dropout: float = 0.5,
                  backend: str | Backend | None = None) -> Sequential:
    """The deeper VGG-like network of the classic from-scratch book: six 3x3 convolutions (16, 16, 32,
    32, 64, 64 channels; the fourth padded by 2) with max pooling after every second, then Linear -> 50
    - ReLU - Dropout - Linear -> classes - Dropout, as the book has it."""
    _check_size("DeepConvNet", image_size, 4)
    size = image_size // 2                 # conv, conv, pool
    size = (size + 2) // 2                 # conv, conv (pad 2 adds 2), pool
    size = size // 2                       # conv, conv, pool
    return _build(backend, lambda: [
        Conv2D(in_channels, 16, 3, pad=1), ReLU(), Conv2D(16, 16, 3, pad=1), ReLUMaxPool2D(2),
        Conv2D(16, 32, 3, pad=1), ReLU(), Conv2D(32, 32, 3, pad=2), ReLUMaxPool2D(2),
        Conv2D(32, 64, 3, pad=1), ReLU(), Conv2D(64, 64, 3, pad=1), ReLUMaxPool2D(2), Flatten(),
        Linear(64 * size * size, 50, activation="relu"), Dropout(dropout), Linear(50, classes), Dropout(dropout)])


MODELS: dict[str, Callable[..., Sequential]] = {
    "simpleconvnet": simple_conv_net,
    "lenet5": lenet5,
    "mlp": mlp,
    "deepconvnet": deep_conv_net,
}


def build_model(name: str, **kwargs: object) -> Sequential:
    """The zoo model called ``name`` (see :data:`MODELS`), with the function's keyword arguments."""
    key = name.strip().lower().replace("_", "").replace("-", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[key](**kwargs)
