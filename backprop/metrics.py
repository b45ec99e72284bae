"""Metrics counted on the device: a correct-prediction count stays a 0-d backend array, so that a
training loop adds it up without reading the host (see :mod:`backprop.training`)."""

from __future__ import annotations

from backprop.backends import Array


def correct_count(pred: Array, target: Array, threshold: float | None = None) -> tuple[Array, int]:
    """(correct, total) predictions: correct as a 0-d backend array (no host read), total an int.

    With a ``threshold`` (binary or multi-label outputs) every element counts: ``pred > threshold``
    against ``target > 0.5``. Without one, (N, K>1) outputs are classes (argmax against integer labels
    or one-hot rows) and (N,) or (N, 1) outputs are probabilities thresholded at 0.5.
    """
    if threshold is None and pred.ndim == 2 and pred.shape[1] > 1:
        labels = target if target.ndim == 1 else target.argmax(axis=1)
        if labels.shape != pred.shape[:1]:
            raise ValueError(f"accuracy: labels of shape {tuple(target.shape)} do not fit outputs "
                             f"{tuple(pred.shape)}")
        return (pred.argmax(axis=1) == labels).sum(), int(pred.shape[0])
    if target.size != pred.size:
        raise ValueError(f"accuracy: targets of shape {tuple(target.shape)} do not fit outputs "
                         f"{tuple(pred.shape)}")
    hits = (pred > (0.5 if threshold is None else threshold)) == (target.reshape(pred.shape) > 0.5)
    return hits.sum(), int(pred.size)
