"""Regression: an MLP [2, 64, 64, 64, 1] learns f(x, y) = sin(x) + x cos(y) + y + 3^(x/3).

Teaches the practical side of fitting a function: standardize inputs and targets (with the training
set's mean and std, reused unchanged on test data), train with Adam on shuffled mini-batches with a
cosine learning-rate schedule, and judge the model on held-out samples, in standardized units and
back in the function's own units. ``--plot PATH`` draws the true and learned functions and the error
over [-10, 10]^2 (needs matplotlib, the ``[plot]`` extra).

    python -m backprop.examples.regression [--epochs N] [--samples N] [--seed S] [--backend B] [--plot out.png]
"""

from __future__ import annotations

import time

import numpy as np

import backprop as bp
from backprop.backends.install import pip_install
from backprop.examples import example_parser, parse

LOW, HIGH = -10.0, 10.0


def target_function(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sin(x) + x * np.cos(y) + y + 3.0 ** (x / 3.0)


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points drawn uniformly from the square, and f at each, as (n, 2) and (n, 1)."""
    xy = rng.uniform(LOW, HIGH, size=(n, 2))
    return xy, target_function(xy[:, 0], xy[:, 1])[:, None]


class Standardizer:
    """z = (a - mean) / std per column, with mean and std taken from the data it was fitted on."""

    def __init__(self, a: np.ndarray) -> None:
        self.mean, self.std = a.mean(axis=0), a.std(axis=0)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return ((a - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean


def build() -> bp.Sequential:
    return bp.Sequential(bp.Linear(2, 64), bp.ReLU(), bp.Linear(64, 64), bp.ReLU(),
                         bp.Linear(64, 64), bp.ReLU(), bp.Linear(64, 1))


def run(epochs: int = 100, samples: int = 10_000, test_samples: int = 2_000, batch_size: int = 64,
        lr: float = 3e-3, seed: int = 0, progress: bool = False) -> dict:
    """Train on ``samples`` random points and return the test MSE (standardized and original units),
    the training history, the training time, and the model with its two standardizers."""
    rng = np.random.default_rng(seed)
    x_train, y_train = make_data(samples, rng)
    x_test, y_test = make_data(test_samples, rng)
    sx, sy = Standardizer(x_train), Standardizer(y_train)
    bp.manual_seed(seed)
    model = build()
    optimizer = bp.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    history = model.fit(sx(x_train), sy(y_train), loss=bp.MSE(), optimizer=optimizer, epochs=epochs,
                        batch_size=batch_size, seed=seed, progress=progress,
                        scheduler=bp.CosineAnnealingLR(optimizer, t_max=epochs))
    seconds = time.perf_counter() - start
    pred = sy.inverse(model.predict(sx(x_test)).astype(np.float64))
    test_mse = float(((pred - y_test) ** 2).mean())
    return {"test_mse": test_mse / float(sy.std[0]) ** 2, "test_mse_original": test_mse,
            "train_loss": history["loss"][-1], "history": history["loss"], "seconds": seconds,
            "model": model, "standardize_x": sx, "standardize_y": sy}


def plot(result: dict, path: str, grid: int = 200) -> bool:
    """Save true f, learned f and their difference as heatmaps; False when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(f"matplotlib is not installed, so no plot: {pip_install('plot')}")
        return False
    axis = np.linspace(LOW, HIGH, grid)
    gx, gy = np.meshgrid(axis, axis)
    true = target_function(gx, gy)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    learned = result["standardize_y"].inverse(result["model"].predict(result["standardize_x"](points)))
    learned = learned.reshape(true.shape)
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    extent = (LOW, HIGH, LOW, HIGH)
    vmin, vmax = true.min(), true.max()
    panels = [(true, "true f(x, y)", "viridis", vmin, vmax),
              (learned, "learned by the MLP", "viridis", vmin, vmax),
              (learned - true, "learned - true", "coolwarm", None, None)]
    for ax, (img, title, cmap, lo, hi) in zip(axes, panels, strict=True):
        if lo is None:
            hi = float(np.abs(img).max())
            lo = -hi
        im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, vmin=lo, vmax=hi)
        ax.set(title=title, xlabel="x", ylabel="y")
        fig.colorbar(im, ax=ax)
    fig.suptitle(f"f(x, y) = sin(x) + x cos(y) + y + 3^(x/3); "
                 f"test MSE {result['test_mse_original']:.4f}")
    fig.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser("regression", __doc__)
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training set")
    parser.add_argument("--samples", type=int, default=10_000, help="training samples")
    parser.add_argument("--test-samples", type=int, default=2_000, help="held-out samples")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam's initial learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the weights and the shuffling")
    parser.add_argument("--plot", metavar="PATH", help="save a PNG of true vs learned f (default: no plot)")
    parser.add_argument("--progress", action="store_true", help="show fit's progress bar")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")
    args, backend = parse(parser, argv)
    with bp.use_backend(backend):
        result = run(args.epochs, args.samples, args.test_samples, args.batch_size, args.lr, args.seed,
                     args.progress)
    if not args.quiet:
        step = max(1, args.epochs // 5)
        for epoch in [*range(step, args.epochs, step), args.epochs]:
            print(f"epoch {epoch:4d}  train MSE (standardized) {result['history'][epoch - 1]:.5f}")
        print(f"trained in {result['seconds']:.1f} s")
    print(f"test MSE on {args.test_samples} held-out points: {result['test_mse']:.5f} standardized, "
          f"{result['test_mse_original']:.4f} in f's units (f's variance: "
          f"{float(result['standardize_y'].std[0]) ** 2:.1f})")
    if args.plot and plot(result, args.plot):
        print(f"plot saved to {args.plot}")
    return result


if __name__ == "__main__":
    main()
