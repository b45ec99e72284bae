"""Linear regression by batch gradient descent: one Linear(d, 1) layer, MSE, plain SGD, full batch.

Teaches gradient descent at its simplest: data made as y = X w + b + noise, every step uses the whole
data set, the loss falls epoch by epoch towards the noise's variance, and the layer's weight matrix
``W`` (shape (d, 1)) and bias ``b`` end up close to the true w and b.

    python -m backprop.examples.linear_regression [--epochs N] [--lr LR] [--every K] [--seed S] [--backend B]
"""

from __future__ import annotations

import numpy as np

import backprop as bp
from backprop.examples import example_parser, parse

TRUE_W = np.array([2.0, -3.5, 0.5])
TRUE_B = 1.0


def make_data(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, len(TRUE_W)))
    y = x @ TRUE_W + TRUE_B + noise * rng.standard_normal(n)
    return x.astype(np.float32), y[:, None].astype(np.float32)


def run(epochs: int = 100, lr: float = 0.1, samples: int = 500, noise: float = 0.1, seed: int = 0) -> dict:
    """Fit Linear(d, 1) by full-batch gradient descent; return the history and the learned w and b."""
    x, y = make_data(samples, noise, np.random.default_rng(seed))
    bp.manual_seed(seed)
    model = bp.Sequential(bp.Linear(len(TRUE_W), 1))
    history = model.fit(x, y, loss=bp.MSE(), optimizer=bp.SGD(model.parameters(), lr=lr),
                        epochs=epochs, batch_size=None, shuffle=False, progress=False)
    layer = model[0]
    assert isinstance(layer, bp.Linear)
    return {"history": history["loss"], "w": layer.W.data[:, 0].astype(float).tolist(),
            "b": float(layer.b.data[0]), "true_w": TRUE_W.tolist(), "true_b": TRUE_B}


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser("linear_regression", __doc__)
    parser.add_argument("--epochs", type=int, default=100, help="full-batch steps")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD's learning rate")
    parser.add_argument("--samples", type=int, default=500, help="data points")
    parser.add_argument("--noise", type=float, default=0.1, help="std of the noise added to y")
    parser.add_argument("--every", type=int, default=10, help="print the loss every K epochs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the initial weights")
    parser.add_argument("--quiet", action="store_true", help="print only the weights")
    args, backend = parse(parser, argv)
    with bp.use_backend(backend):
        result = run(args.epochs, args.lr, args.samples, args.noise, args.seed)
    if not args.quiet:
        for epoch, value in enumerate(result["history"], 1):
            if epoch == 1 or epoch % args.every == 0 or epoch == args.epochs:
                print(f"epoch {epoch:4d}  MSE {value:.6f}")
    for name, w, b in (("learned", result["w"], result["b"]), ("true", result["true_w"], result["true_b"])):
        print(f"{name:7s} w [{', '.join(f'{v:+.4f}' for v in w)}]  b {b:+.4f}")
    return result


if __name__ == "__main__":
    main()
