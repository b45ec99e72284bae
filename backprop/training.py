"""The training loop: ``fit`` over mini-batches with a progress bar, ``evaluate`` and ``predict``.

Data arrive as host arrays (NumPy or anything array-like); floating data are converted to the model's
dtype as they move to its backend, one batch at a time. Everything about the data is checked before
the first update, so bad input never leaves a half-trained model behind.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from tqdm import tqdm

from backprop.checks import check_labels
from backprop.data.loader import DataLoader
from backprop.layers.base import Layer
from backprop.layers.norm import _BatchNorm
from backprop.losses import MSE, BCEWithLogits, BinaryCrossEntropy, Loss
from backprop.optim import Optimizer
from backprop.schedules import LRScheduler

METRICS = ("accuracy",)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or Inf; the model holds the last weights (and BatchNorm statistics) that
    gave a finite loss."""


def correct_count(pred: Any, target: Any, threshold: float | None = None) -> tuple[int, int]:
    """(correct, total) predictions.

    With a ``threshold`` (binary or multi-label outputs) every element counts: ``pred > threshold``
    against ``target > 0.5``. Without one, (N, K>1) outputs are classes (argmax against integer labels
    or one-hot rows) and (N,) or (N, 1) outputs are probabilities thresholded at 0.5.
    """
    if threshold is None and pred.ndim == 2 and pred.shape[1] > 1:
        labels = target if target.ndim == 1 else target.argmax(axis=1)
        if labels.shape != pred.shape[:1]:
            raise ValueError(f"accuracy: labels of shape {tuple(target.shape)} do not fit outputs "
                             f"{tuple(pred.shape)}")
        return int((pred.argmax(axis=1) == labels).sum()), int(pred.shape[0])
    if target.size != pred.size:
        raise ValueError(f"accuracy: targets of shape {tuple(target.shape)} do not fit outputs "
                         f"{tuple(pred.shape)}")
    hits = (pred > (0.5 if threshold is None else threshold)) == (target.reshape(pred.shape) > 0.5)
    return int(hits.sum()), int(pred.size)


def _threshold(loss: Loss | None) -> float | None:
    """The decision threshold of a binary loss's outputs (logits: 0, probabilities: 0.5), else None."""
    if isinstance(loss, BCEWithLogits):
        return 0.0
    return 0.5 if isinstance(loss, BinaryCrossEntropy) else None


def _host(a: Any, backend: Any) -> np.ndarray:
    return backend.to_numpy(a) if backend.is_array(a) else np.asarray(a)


def _check_data(model: Layer, loss: Loss | None, x: np.ndarray, y: np.ndarray, what: str,
                accuracy: bool = False) -> None:
    """Refuse data that would fail or poison training, before any update: sizes, NaN/Inf, and targets
    against the loss (or, without one, against ``accuracy``'s needs)."""
    if len(x) != len(y):
        raise ValueError(f"{what}: x has {len(x)} samples but y has {len(y)}")
    if len(x) == 0:
        raise ValueError(f"{what}: no samples")
    for name, a in (("x", x), ("y", y)):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"{what}: {name} holds NaN or Inf (first at index {tuple(int(i) for i in bad)})")
    if loss is not None or accuracy:
        with _mode(model, False):
            out_shape = (len(x), *model.forward(model.backend.asarray(x[:1])).shape[1:])
        if loss is not None:
            loss.check_target(out_shape, y)
        else:
            _check_class_targets(out_shape, y, what)


def _check_class_targets(out_shape: tuple[int, ...], y: np.ndarray, what: str) -> None:
    """Targets accuracy can be counted against: for (N, K>1) outputs, integer labels (N,) in [0, K) or
    rows (N, K); for other outputs, one target per output value."""
    if len(out_shape) == 2 and out_shape[1] > 1:
        k = out_shape[1]
        if y.ndim == 1 and y.dtype.kind in "iu":
            check_labels(y, k, what)
        elif not (y.ndim == 2 and y.shape[1] == k):
            raise ValueError(f"{what}: targets of shape {tuple(y.shape)} {y.dtype} fit neither integer labels "
                             f"({out_shape[0]},) nor rows ({out_shape[0]}, {k}) for outputs {out_shape}")
    elif y.size != math.prod(out_shape):
        raise ValueError(f"{what}: targets of shape {tuple(y.shape)} do not fit outputs {out_shape}")


@contextmanager
def _mode(model: Layer, training: bool) -> Iterator[None]:
    """``model`` in training or inference mode inside the block; afterwards every layer gets back its own
    mode (a BatchNorm frozen with ``model[i].eval()`` stays frozen)."""
    before = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        model.train(before[0][1])  # through any train() override that passes the mode on
        for m, mode in before:
            m.training = mode


def _all_finite(backend: Any, arrays: Sequence[Any]) -> bool:
    return all(bool(backend.xp.isfinite(a).all()) for a in arrays)


def _check_metrics(metrics: Sequence[str]) -> None:
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a sequence of names, such as ({metrics!r},), got the string {metrics!r}")
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}: choose from {METRICS}")


def fit(model: Layer, x: Any, y: Any, *, loss: Loss, optimizer: Optimizer, epochs: int = 1,
        batch_size: int | None = None, shuffle: bool = True, seed: int | None = None,
        validation_data: tuple[Any, Any] | None = None, scheduler: LRScheduler | None = None,
        metrics: Sequence[str] = (), progress: bool = True) -> dict[str, list[float]]:
    """Train ``model`` for ``epochs`` passes over (x, y) and return the history of each epoch.

    ``batch_size=None`` trains on the full batch, 1 is single-sample SGD, anything between is
    mini-batch. Shuffling is seeded by ``seed``. ``scheduler`` is stepped after every epoch. The
    history has "loss" (mean training loss of the epoch), each metric, and with ``validation_data``
    "val_loss" and "val_<metric>". A NaN or Inf loss raises :class:`TrainingDivergedError` naming the
    epoch and batch, after restoring the weights of the last batch whose loss was finite.
    """
    backend = model.backend
    if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    _check_metrics(metrics)
    x, y = _host(x, backend), _host(y, backend)
    loss.to(backend)
    _check_data(model, loss, x, y, "training data")
    if validation_data is not None:
        validation_data = (_host(validation_data[0], backend), _host(validation_data[1], backend))
        _check_data(model, loss, *validation_data, "validation data")
    threshold = _threshold(loss)
    if seed is None and shuffle:  # the order then follows manual_seed, as in PyTorch
        seed = backend.draw_seed()
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, backend=backend)
    if batch_size is not None and 1 < batch_size < len(x) and len(x) % batch_size == 1:
        # (_check_data's probe forward left each BatchNorm's input shape; a BatchNorm2D also averages
        # over H and W, so one image is enough unless its maps are 1x1)
        lonely = [type(m).__name__ for m in model.modules() if isinstance(m, _BatchNorm)
                  and math.prod(getattr(m, "input_shape", (1, 1))[2:]) < 2]
        if lonely:
            raise ValueError(f"{len(x)} samples in batches of {batch_size} leave a last batch of one sample, "
                             f"which {lonely[0]} cannot normalize: choose another batch_size")
    # Weights and buffers (BatchNorm statistics) as of the last batch whose loss was finite.
    tracked = [p.data for p in model.parameters()] + list(model.named_buffers().values())
    last_good = [a.copy() for a in tracked]
    history: dict[str, list[float]] = {"loss": [], **{m: [] for m in metrics}}

    def diverged(what: str, advice: str = "lower the learning rate or clip gradients (clip_norm=...)"
                 ) -> TrainingDivergedError:
        for a, good in zip(tracked, last_good):
            a[...] = good
        return TrainingDivergedError(f"{what}: training stopped and the weights and statistics before the last "
                                     f"update (which gave a finite training loss) were restored; {advice}")

    with _mode(model, True):
        for epoch in range(1, epochs + 1):
            total_loss, seen, correct, counted = 0.0, 0, 0, 0
            bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress,
                       leave=False, dynamic_ncols=True)
            for batch, (xb, yb) in enumerate(bar, 1):
                out = model.forward(xb)
                value = float(loss.forward(out, yb))
                if not math.isfinite(value):
                    raise diverged(f"loss became {value} at epoch {epoch}, batch {batch}")
                model.backward_params(loss.backward())
                for a, good in zip(tracked, last_good):
                    good[...] = a
                optimizer.step()
                total_loss += value * len(xb)
                seen += len(xb)
                if metrics:
                    c, t = correct_count(out, yb, threshold)
                    correct, counted = correct + c, counted + t
                if progress:
                    bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
            if not _all_finite(backend, tracked):  # the epoch's last update, which no loss has seen yet
                raise diverged(f"the weights became NaN or Inf in the last update of epoch {epoch}")
            history["loss"].append(total_loss / seen)
            if "accuracy" in metrics:
                history["accuracy"].append(correct / counted)
            if validation_data is not None:
                scores = evaluate(model, *validation_data, loss=loss, metrics=metrics)
                if not math.isfinite(scores["loss"]):
                    raise diverged(f"the validation loss became {scores['loss']} after epoch {epoch}, with a "
                                   "finite training loss", "check the validation data's scale, or lower the "
                                   "learning rate")
                for k, v in scores.items():
                    history.setdefault(f"val_{k}", []).append(v)
            if scheduler is not None:
                scheduler.step()
            if progress:
                summary = "  ".join(f"{k} {v[-1]:.4f}" for k, v in history.items())
                tqdm.write(f"epoch {epoch}/{epochs}  {summary}")
    return history


def predict(model: Layer, x: Any, batch_size: int = 1000) -> np.ndarray:
    """Outputs for ``x`` in inference mode, batch by batch, as a host NumPy array."""
    backend = model.backend
    x = _host(x, backend)
    with _mode(model, False):
        outs = [backend.to_numpy(model.forward(xb))
                for xb, _ in DataLoader(x, batch_size=batch_size, shuffle=False, backend=backend)]
    return np.concatenate(outs)


def evaluate(model: Layer, x: Any, y: Any, *, loss: Loss | None = None,
             metrics: Sequence[str] | None = None, batch_size: int = 1000) -> dict[str, float]:
    """Mean ``loss`` (when given) and each metric over (x, y), in inference mode.

    ``metrics=None`` means accuracy, unless the loss is a regression loss (MSE): then none.
    """
    backend = model.backend
    if metrics is None:
        metrics = () if isinstance(loss, MSE) else ("accuracy",)
    _check_metrics(metrics)
    x, y = _host(x, backend), _host(y, backend)
    if loss is not None:
        loss.to(backend)
    _check_data(model, loss, x, y, "evaluation data", accuracy="accuracy" in metrics)
    threshold = _threshold(loss)
    total_loss, correct, counted = 0.0, 0, 0
    with _mode(model, False):
        for xb, yb in DataLoader(x, y, batch_size=batch_size, shuffle=False, backend=backend):
            out = model.forward(xb)
            if loss is not None:
                total_loss += float(loss.forward(out, yb)) * len(xb)
            if metrics:
                c, t = correct_count(out, yb, threshold)
                correct, counted = correct + c, counted + t
    scores = {"loss": total_loss / len(x)} if loss is not None else {}
    if "accuracy" in metrics:
        scores["accuracy"] = correct / counted
    return scores
