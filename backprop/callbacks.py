"""Callbacks: everything around the training step that is not the step itself.

:func:`backprop.training.fit` runs one loop; progress bars, epoch lines, metric files, checkpoints,
Ctrl-C handling and early stopping plug into it here, in the style of Keras callbacks and Chainer's
trainer extensions. Subclass :class:`Callback` and pass instances to ``fit(..., callbacks=[...])``.

``on_batch_begin`` and ``on_batch_end`` run around every step and must not read device values (``float(x)``,
``to_numpy``): on a GPU each read waits for the device. Values are handed out at reporting points instead:
``on_report`` (a few times a second at most) and ``on_epoch_end``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from backprop.checkpoint import atomic_write

if TYPE_CHECKING:
    from backprop.training import Loop

Logs = dict[str, float]

PLAIN_INTERVAL = 10.0  # seconds between ProgressBar's plain lines where its output is not a terminal


def write_line(line: str) -> None:
    """Print a line without breaking a running progress bar."""
    tqdm.write(line)


class Callback:
    """Hooks the training loop calls; each gets the :class:`~backprop.training.Loop` (model,
    optimizer, position). Set ``loop.stop_training = True`` to end training after the current batch."""

    def on_train_begin(self, loop: Loop) -> None:
        """Before the first step (after the data were checked)."""

    def on_epoch_begin(self, loop: Loop) -> None:
        """Before an epoch's first batch (or, resuming mid-epoch, its next one)."""

    def on_batch_begin(self, loop: Loop) -> None:
        """Before every step; must not read device values."""

    def on_batch_end(self, loop: Loop) -> None:
        """After every step; must not read device values."""

    def on_report(self, loop: Loop, logs: Logs) -> None:
        """At a reporting point: ``logs`` has the epoch's running means ("loss", metrics)."""

    def on_epoch_end(self, loop: Loop, logs: Logs) -> None:
        """After an epoch and its validation: ``logs`` is the epoch's record (as in the history)."""

    def on_train_end(self, loop: Loop) -> None:
        """When training ends: finished, stopped (by a callback, mid-epoch too), or failed, with
        ``loop.error`` holding the exception (close files, restore handlers)."""


class CallbackList(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
        self.callbacks = list(callbacks)

    def _each(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_train_begin(self, loop: Loop) -> None:
        self._each("on_train_begin", loop)

    def on_epoch_begin(self, loop: Loop) -> None:
        self._each("on_epoch_begin", loop)

    def on_batch_begin(self, loop: Loop) -> None:
        self._each("on_batch_begin", loop)

    def on_batch_end(self, loop: Loop) -> None:
        self._each("on_batch_end", loop)

    def on_report(self, loop: Loop, logs: Logs) -> None:
        self._each("on_report", loop, logs)

    def on_epoch_end(self, loop: Loop, logs: Logs) -> None:
        self._each("on_epoch_end", loop, logs)

    def on_train_end(self, loop: Loop) -> None:
        self._each("on_train_end", loop)


class ProgressBar(Callback):
    """Progress on ``file`` (default stderr). On a terminal, a tqdm bar per epoch with the running loss
    refreshed at reporting points; elsewhere (a file, a pipe), where a bar's carriage-return frames would
    pile up on one line, a plain line at the first reporting point after every ``interval`` seconds."""

    def __init__(self, file: TextIO | None = None, interval: float = PLAIN_INTERVAL) -> None:
        self.file, self.interval = file, interval
        self.bar: tqdm | None = None
        self.next_line = 0.0  # when a plain line is due

    def _stream(self) -> TextIO:
        return self.file or sys.stderr

    def on_epoch_begin(self, loop: Loop) -> None:
        stream = self._stream()
        if not (hasattr(stream, "isatty") and stream.isatty()):
            self.next_line = time.monotonic() + self.interval
            return
        self.bar = tqdm(total=loop.batches_per_epoch, initial=loop.batch, desc=f"epoch {loop.epoch + 1}/{loop.epochs}",
                        unit="batch", leave=False, dynamic_ncols=True, file=stream)

    def on_batch_end(self, loop: Loop) -> None:
        if self.bar is not None:
            self.bar.update()

    def on_report(self, loop: Loop, logs: Logs) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
        elif time.monotonic() >= self.next_line:
            print(f"epoch {loop.epoch + 1}/{loop.epochs}  batch {loop.batch}/{loop.batches_per_epoch}  "
                  f"loss {logs['loss']:.4f}", file=self._stream(), flush=True)
            self.next_line = time.monotonic() + self.interval

    def on_epoch_end(self, loop: Loop, logs: Logs) -> None:
        self.on_train_end(loop)

    def on_train_end(self, loop: Loop) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_logs(logs: Logs, validation: str = "val") -> str:
    """An epoch's record as one line: losses, accuracies in %, seconds and images per second (which leave
    out the run's warm-up, said so when the epoch holds it); ``validation`` names the validation data
    ("val", or "test" for a test split)."""
    parts = []
    for prefix, name in (("", "train"), ("val_", validation)):
        if prefix + "loss" in logs:
            parts.append(f"{name + ' ' if prefix else ''}loss {logs[prefix + 'loss']:.4f}")
        if prefix + "accuracy" in logs:
            parts.append(f"{name} acc {100 * logs[prefix + 'accuracy']:.2f}%")
    if "seconds" in logs:
        parts.append(f"{logs['seconds']:.1f} s  {logs['images_per_s']:,.0f} img/s")
    if logs.get("warmup_seconds"):
        parts[-1] += f" (not counting the warm-up: {logs['warmup_seconds']:.2f} s of compiling and set-up)"
    return "  ".join(parts)


class EpochLine(Callback):
    """One line per epoch: ``epoch 3/5  loss ...  train acc ...  val acc ...  12.3 s  4,800 img/s``."""

    def __init__(self, say: Callable[[str], None] = write_line, validation: str = "val") -> None:
        self.say = say
        self.validation = validation

    def on_epoch_end(self, loop: Loop, logs: Logs) -> None:
        self.say(f"epoch {loop.epoch}/{loop.epochs}  {format_logs(logs, self.validation)}")


class MetricsFiles(Callback):
    """After every epoch, the history so far as ``metrics.csv`` and ``metrics.json`` in ``folder``
    (written atomically), like Keras's CSVLogger."""

    CSV, JSON = "metrics.csv", "metrics.json"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def on_epoch_end(self, loop: Loop, logs: Logs) -> None:
        history = loop.history
        columns = list(dict.fromkeys(k for row in history for k in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write(self.folder / self.CSV, lambda f: f.write(text.getvalue().encode()))
        atomic_write(self.folder / self.JSON, lambda f: f.write(json.dumps(history, indent=1).encode()))


class StopOnInterrupt(Callback):
    """A first Ctrl-C asks the loop to stop after the current batch (so a checkpoint callback can save
    a state to resume from); a second one aborts at once. ``interrupted`` tells afterwards."""

    def __init__(self, say: Callable[[str], None] = write_line) -> None:
        self.say = say
        self.interrupted = False
        self._previous: Any = None

    def on_train_begin(self, loop: Loop) -> None:
        self.interrupted = False
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread

        def handle(signum: int, frame: Any) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = loop.stop_training = True
            self.say("interrupted: stopping after this batch (Ctrl-C again to abort at once)")

        self._previous = signal.signal(signal.SIGINT, handle)

    def on_train_end(self, loop: Loop) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class EarlyStopping(Callback):
    """Stop when ``monitor`` (an epoch record's key, such as "val_loss") has not improved by more than
    ``min_delta`` for ``patience`` epochs; ``restore_best_weights`` puts back the weights, buffers and
    optimizer state of the best epoch. ``mode`` "min" or "max" (default: "max" for accuracies)."""

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str | None = None, restore_best_weights: bool = False) -> None:
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.sign = -1.0 if (mode or ("max" if "acc" in monitor else "min")) == "max" else 1.0
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, loop: Loop) -> None:
        from backprop.training import Snapshot
        self.best, self.best_epoch, self.wait = math.inf, 0, 0
        self.snapshot = Snapshot(loop.model, loop.optimizer) if self.restore_best_weights else None

    def on_epoch_end(self, loop: Loop, logs: Logs) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, but the epoch records hold "
                           f"{sorted(logs)}: pass validation_data or monitor another key")
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, loop.epoch, 0
            if self.snapshot is not None:
                self.snapshot.take()
        else:
            self.wait += 1
            if self.wait > self.patience:
                loop.stop_training = True

    def on_train_end(self, loop: Loop) -> None:
        if loop.error is None and self.snapshot is not None and self.best_epoch and self.best_epoch != loop.epoch:
            self.snapshot.restore()
