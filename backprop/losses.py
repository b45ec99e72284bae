"""Losses: ``forward(pred, target)`` returns the mean loss as a 0-d array, ``backward()`` returns dpred.

Targets are checked before anything is computed: shapes, dtypes, label ranges and probability ranges
give a ValueError or TypeError that says what was expected. Integer or boolean targets of a loss on
values (MSE, the binary cross-entropies) are cast to the prediction's dtype first, so that a float32
model never computes its loss, or its whole backward pass, in float64. An empty batch is refused: a
mean over no values is undefined (NaN), and its gradient would divide by zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from backprop.backends import Array
from backprop.checks import check_labels
from backprop.metrics import correct_count
from backprop.module import Module


class Loss(Module):
    takes_labels = False  # integer targets are class labels (kept) rather than values (cast to floats)
    # Whether forward() checks the target's values (label and probability ranges). Those checks read
    # values back to the host, a device synchronization on a GPU; ``fit`` and ``evaluate`` check each
    # dataset once instead and turn this off while they run (see :func:`targets_checked`).
    check_values = True
    # Where a binary loss's outputs decide between the classes (probabilities: 0.5, logits: 0); None for
    # a loss whose outputs are classes (argmax) or values.
    threshold: float | None = None

    def forward(self, pred: Array, target: Array) -> Array:
        raise NotImplementedError

    def correct(self, pred: Array, target: Array) -> tuple[Array, int]:
        """(correct predictions as a 0-d backend array, how many were counted) of this loss's outputs
        ``pred`` against ``target``: accuracy with no host read (:func:`backprop.metrics.correct_count`)."""
        return correct_count(pred, target, self.threshold)

    def backward(self) -> Array:
        raise NotImplementedError

    def __call__(self, pred: Array, target: Array) -> Array:
        return self.forward(pred, target)

    def check_target(self, pred_shape: tuple[int, ...], target: Array) -> None:
        """Refuse a target whose shape or dtype does not fit a prediction of ``pred_shape``. It runs on
        every batch, so it must read no value (that would wait for a GPU): checks of the values
        belong in :meth:`check_target_values`, which ``fit`` runs once per dataset."""
        if tuple(target.shape) != tuple(pred_shape):
            raise ValueError(f"{type(self).__name__}: target shape {tuple(target.shape)} does not match "
                             f"prediction shape {tuple(pred_shape)}")

    def check_target_values(self, pred_shape: tuple[int, ...], target: Array) -> None:
        """Refuse target values this loss cannot take, for a target that passed :meth:`check_target`
        (any array module; reads the values on the host)."""

    def _check(self, pred: Array, target: Array) -> Array:
        """Check both arrays (metadata only); returns the target as the loss computes with it: integer
        labels of any width or byte order as native int64, once, here (a loss on labels), or integer and
        boolean values cast to the prediction's dtype (a loss on values)."""
        name = type(self).__name__
        self.backend.check_array(pred, f"{name} prediction")
        if pred.size == 0:
            raise ValueError(f"{name}: the batch is empty (predictions of shape {tuple(pred.shape)}), and a mean "
                             "over no values is undefined: skip empty batches")
        if not self.backend.is_array(target):
            self.backend.check_array(target, f"{name} target")  # raises, naming the fix
        kind = target.dtype.kind
        if kind in "iu" and self.takes_labels:
            target = target if target.dtype == np.int64 else target.astype(np.int64)
        elif kind in "biu" and not self.takes_labels:
            target = target.astype(pred.dtype)
        self.check_target(pred.shape, target)
        if target.dtype.kind not in "iu":
            self.backend.check_array(target, f"{name} target", pred.dtype)
        if self.check_values:
            self.check_target_values(pred.shape, target)
        return target


@contextmanager
def targets_checked(loss: Loss) -> Iterator[Loss]:
    """Inside the block ``loss.forward`` skips its value checks (no host read per batch): for loops
    over data whose targets were checked once, as a whole."""
    before = loss.check_values
    loss.check_values = False
    try:
        yield loss
    finally:
        loss.check_values = before


def _check_probabilities(loss: Loss, target: Array) -> None:
    if target.size and not (float(target.min()) >= 0 and float(target.max()) <= 1):  # NaN fails too
        raise ValueError(f"{type(loss).__name__}: targets must lie in [0, 1] (and not be NaN)")


class _BinaryLoss(Loss):
    """Binary cross-entropies: targets have the prediction's shape and lie in [0, 1]."""

    def check_target_values(self, pred_shape: tuple[int, ...], target: Array) -> None:
        _check_probabilities(self, target)


class MSE(Loss):
    """Mean squared error over all elements."""

    def forward(self, pred: Array, target: Array) -> Array:
        target = self._check(pred, target)
        self.diff = pred - target
        return (self.diff * self.diff).mean()

    def backward(self) -> Array:
        return self.diff * (2.0 / self.diff.size)


class BinaryCrossEntropy(_BinaryLoss):
    """Cross-entropy of probabilities (a Sigmoid output) against 0/1 targets, mean over elements.

    Probabilities are clipped to [eps, 1 - eps] (eps = 1e-7 in float32, 1e-12 in float64), so a
    confident wrong answer gives a large finite loss instead of inf.
    """

    threshold = 0.5

    def forward(self, pred: Array, target: Array) -> Array:
        target = self._check(pred, target)
        xp = self.backend.xp
        eps = 1e-7 if pred.dtype == np.float32 else 1e-12
        self.p = xp.clip(pred, eps, 1 - eps)
        self.target = target
        return -(target * xp.log(self.p) + (1 - target) * xp.log1p(-self.p)).mean()

    def backward(self) -> Array:
        return (self.p - self.target) / (self.p * (1 - self.p) * self.p.size)


class BCEWithLogits(_BinaryLoss):
    """Sigmoid and binary cross-entropy in one, on logits: stable for any logit size."""

    threshold = 0.0

    def forward(self, pred: Array, target: Array) -> Array:
        target = self._check(pred, target)
        xp = self.backend.xp
        self.pred, self.target = pred, target
        return (xp.maximum(pred, 0) - pred * target + xp.log1p(xp.exp(-xp.abs(pred)))).mean()

    def backward(self) -> Array:
        return (self.backend.sigmoid(self.pred) - self.target) / self.pred.size


class SoftmaxCrossEntropy(Loss):
    """Softmax over classes and cross-entropy, fused; mean over the batch.

    Predictions are logits of shape (N, K); targets are integer labels (N,) in [0, K) or
    probabilities (N, K) such as one-hot rows.
    """

    takes_labels = True

    def check_target(self, pred_shape: tuple[int, ...], target: Array) -> None:
        name = type(self).__name__
        if len(pred_shape) != 2:
            raise ValueError(f"{name}: predictions must be (N, classes) logits, got shape {pred_shape}")
        kind = np.dtype(target.dtype).kind
        if kind in "iu":
            if tuple(target.shape) != pred_shape[:1]:
                raise ValueError(f"{name}: integer labels must have shape ({pred_shape[0]},), "
                                 f"got {tuple(target.shape)}")
        elif kind == "f":
            super().check_target(pred_shape, target)
        else:
            raise TypeError(f"{name}: targets must be integer labels or float probabilities, "
                            f"got {target.dtype}")

    def check_target_values(self, pred_shape: tuple[int, ...], target: Array) -> None:
        if np.dtype(target.dtype).kind in "iu":
            check_labels(target, pred_shape[1], type(self).__name__)
            return
        _check_probabilities(self, target)
        if target.size and not float(abs(target.sum(axis=1) - 1).max()) <= 1e-3:
            raise ValueError(f"{type(self).__name__}: each row of probability targets must sum to 1")

    _hits: tuple[Array, Array] | None = None  # (the logits, their rows' hits) of the last forward

    def forward(self, pred: Array, target: Array) -> Array:
        target = self._check(pred, target)
        hits = self.backend.empty((pred.shape[0],), dtype=pred.dtype)
        loss, self.grad = self.backend.softmax_cross_entropy(pred, target, hits)
        self._hits = (pred, hits)
        return loss

    def correct(self, pred: Array, target: Array) -> tuple[Array, int]:
        """For the logits of the last forward, against its targets, the count its kernel made in the
        same pass (on a GPU, no launches of its own but the sum); otherwise counted anew."""
        if self._hits is not None and self._hits[0] is pred:
            return self._hits[1].sum(), int(pred.shape[0])
        return super().correct(pred, target)

    def backward(self) -> Array:
        return self.grad
