"""Binary classification: one hidden ReLU layer separates two interleaving half-moons.

Teaches the binary-classification recipe: a single sigmoid output read as P(class 1), binary
cross-entropy on 0/1 targets of shape (N, 1), accuracy as the fraction of outputs on the right side
of 0.5, and a held-out test set (drawn from the same distribution) to check that the boundary
generalizes. The data are made here with NumPy, no downloads.

    python -m backprop.examples.binary_classifier [--epochs N] [--hidden H] [--noise S] [--seed S] [--backend B]
"""

from __future__ import annotations

import numpy as np

import backprop as bp
from backprop.examples import example_parser, parse


def make_moons(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two half circles, class 0 on top, class 1 below and shifted, with Gaussian noise of std
    ``noise``: (n, 2) float32 points and (n, 1) float32 labels, in random order."""
    n0 = n // 2
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.column_stack([np.cos(t[:n0]), np.sin(t[:n0])])
    lower = np.column_stack([1.0 - np.cos(t[n0:]), 0.5 - np.sin(t[n0:])])
    x = np.concatenate([upper, lower]) + rng.normal(0.0, noise, size=(n, 2))
    y = np.concatenate([np.zeros(n0), np.ones(n - n0)])
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order, None].astype(np.float32)


def run(epochs: int = 100, train_samples: int = 1000, test_samples: int = 1000, hidden: int = 16,
        noise: float = 0.2, lr: float = 0.01, batch_size: int = 32, seed: int = 0) -> dict:
    """Train Linear(2,hidden)-ReLU-Linear(hidden,1)-Sigmoid with BCE and Adam; return accuracies."""
    rng = np.random.default_rng(seed)
    x_train, y_train = make_moons(train_samples, noise, rng)
    x_test, y_test = make_moons(test_samples, noise, rng)
    bp.manual_seed(seed)
    model = bp.Sequential(bp.Linear(2, hidden), bp.ReLU(), bp.Linear(hidden, 1), bp.Sigmoid())
    loss = bp.BinaryCrossEntropy()
    history = model.fit(x_train, y_train, loss=loss, optimizer=bp.Adam(model.parameters(), lr=lr),
                        epochs=epochs, batch_size=batch_size, seed=seed, progress=False)
    train = model.evaluate(x_train, y_train, loss=loss)
    test = model.evaluate(x_test, y_test, loss=loss)
    return {"train_accuracy": train["accuracy"], "test_accuracy": test["accuracy"],
            "train_loss": train["loss"], "test_loss": test["loss"], "history": history["loss"],
            "model": model}


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser("binary_classifier", __doc__)
    parser.add_argument("--epochs", type=int, default=100, help="passes over the training set")
    parser.add_argument("--samples", type=int, default=1000, help="training (and test) samples")
    parser.add_argument("--hidden", type=int, default=16, help="hidden units")
    parser.add_argument("--noise", type=float, default=0.2, help="std of the noise on the moons")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data, the weights and the shuffling")
    parser.add_argument("--quiet", action="store_true", help="print only the final line")
    args, backend = parse(parser, argv)
    with bp.use_backend(backend):
        result = run(args.epochs, args.samples, args.samples, args.hidden, args.noise, args.lr, seed=args.seed)
    if not args.quiet:
        step = max(1, args.epochs // 5)
        for epoch in [*range(step, args.epochs, step), args.epochs]:
            print(f"epoch {epoch:4d}  BCE {result['history'][epoch - 1]:.4f}")
        print(f"train: BCE {result['train_loss']:.4f}   test: BCE {result['test_loss']:.4f}")
    print(f"accuracy: train {result['train_accuracy']:.3f}, test {result['test_accuracy']:.3f}")
    return result


if __name__ == "__main__":
    main()
