"""The tutorial examples in backprop.examples train to the results they promise (quick versions where
the full run is slow) and their command lines run. Every run is seeded, so the numbers are fixed;
the thresholds leave a wide margin over the values measured for several seeds."""

from __future__ import annotations

import re
import sys
from itertools import pairwise

import numpy as np
import pytest

import backprop as bp
from backprop.backends import available_backends, get_backend, registry
from backprop.backends.install import pip_install
from backprop.examples import binary_classifier, linear_regression, regression, xor


def test_xor_as_specified_converges():
    result = xor.run()  # Linear(2,8)-ReLU-Linear(8,4)-Sigmoid-Linear(4,1)-Sigmoid, MSE, SGD 0.6, 400 epochs
    assert len(result["history"]) == 400
    assert result["final_loss"] < 0.01
    assert result["history"][-1] < 0.01
    assert result["history"][-1] < result["history"][0] / 10
    outputs = np.array(result["outputs"])
    np.testing.assert_array_equal(outputs > 0.5, [False, True, True, False])
    assert result["correct"]


def test_xor_softmax_gets_all_four_right():
    result = xor.run(softmax=True)
    probs = np.array(result["outputs"])  # P(class 1) from the softmax
    np.testing.assert_array_equal(probs > 0.5, [False, True, True, False])
    assert result["correct"]
    assert result["final_loss"] < 0.05


def test_xor_is_deterministic():
    assert xor.run(epochs=50) == xor.run(epochs=50)


def test_regression_quick_version_beats_linear_fit():
    # A least-squares plane leaves a standardized MSE of about 0.4; this quick run (2,000 samples,
    # 30 epochs) reached 0.003-0.0075 for seeds 0-9, the full run about 1e-4.
    result = regression.run(epochs=30, samples=2000, test_samples=1000, batch_size=32, lr=5e-3, seed=0)
    assert result["test_mse"] < 0.02
    variance = float(result["standardize_y"].std[0]) ** 2
    assert result["test_mse_original"] == pytest.approx(result["test_mse"] * variance, rel=1e-6)
    assert result["history"][-1] < result["history"][0] / 10


def test_binary_classifier_separates_the_moons():
    # Measured for seeds 0-9: test accuracy 0.962-0.977; a linear classifier gets about 0.86.
    result = binary_classifier.run(seed=0)
    assert result["train_accuracy"] > 0.93
    assert result["test_accuracy"] > 0.93


def test_make_moons_is_balanced_and_shaped():
    x, y = binary_classifier.make_moons(101, 0.1, np.random.default_rng(0))
    assert x.shape == (101, 2) and y.shape == (101, 1)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert int(y.sum()) == 51


def test_linear_regression_recovers_weights():
    result = linear_regression.run(epochs=100, lr=0.1, seed=0)
    np.testing.assert_allclose(result["w"], result["true_w"], atol=0.03)
    assert result["b"] == pytest.approx(result["true_b"], abs=0.03)
    history = result["history"]
    # full-batch GD with a small step never goes up (beyond float32 rounding on the plateau)
    assert all(b <= a * (1 + 1e-5) for a, b in pairwise(history))
    assert history[-1] < 0.02  # the noise variance is 0.01


def test_xor_main(capsys):
    result = xor.main(["--quiet"])
    assert result["correct"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "all four correct" in out[0]
    xor.main(["--softmax", "--epochs", "40"])
    out = capsys.readouterr().out
    assert "epoch    40" in out and "softmax" in out


def test_other_mains_run(capsys):
    linear_regression.main(["--epochs", "20", "--every", "5"])
    out = capsys.readouterr().out
    assert "epoch   20" in out and "learned w" in out and "true    w" in out
    binary_classifier.main(["--epochs", "3", "--samples", "100", "--quiet"])
    assert "accuracy: train" in capsys.readouterr().out
    regression.main(["--epochs", "2", "--samples", "300", "--test-samples", "100", "--quiet"])
    assert "test MSE on 100 held-out points" in capsys.readouterr().out


def test_regression_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    path = tmp_path / "f.png"
    regression.main(["--epochs", "1", "--samples", "200", "--test-samples", "50", "--quiet",
                     "--plot", str(path)])
    assert pip_install("plot") in capsys.readouterr().out
    assert not path.exists()


def test_regression_plot_with_matplotlib(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "f.png"
    regression.main(["--epochs", "1", "--samples", "200", "--test-samples", "50", "--quiet",
                     "--plot", str(path)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot saved" in capsys.readouterr().out


EXAMPLES = [xor, linear_regression, binary_classifier, regression]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda m: m.__name__.rpartition(".")[2])
def test_help_shows_every_default_and_the_backend_option(example, capsys):
    with pytest.raises(SystemExit) as exit_:
        example.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    entries = re.split(r"\n(?=  -)", text.split("options:", 1)[1])  # one per option, wrapped lines included
    taking_values = [" ".join(e.split()) for e in entries if re.match(r"\s*--[\w-]+ [A-Z{]", e)]
    assert any(e.startswith("--backend {") for e in taking_values)
    assert len(taking_values) >= 4 and all("default" in e for e in taking_values), taking_values


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_backend_option_picks_the_backend(name, capsys, monkeypatch):
    if available_backends()[name] is not None:
        pytest.skip(f"backend {name!r} unavailable: {available_backends()[name]}")
    monkeypatch.delenv("BACKPROP_BACKEND", raising=False)
    result = binary_classifier.main(["--epochs", "2", "--samples", "100", "--quiet", "--backend", name])
    assert result["model"].backend.name == name
    assert get_backend().name == "numpy"  # the default again once main returns


def test_an_unavailable_backend_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setitem(registry._reasons, "cupy", "no GPU here")
    with pytest.raises(SystemExit) as exit_:
        xor.main(["--backend", "cupy"])
    assert exit_.value.code == 2 and "backend 'cupy' is not available: no GPU here" in capsys.readouterr().err


def test_examples_run_on_each_backend(backend):
    """Each example's own code (its data, its reads of the results) on every backend."""
    with bp.use_backend(backend):
        results = [xor.run(epochs=20), linear_regression.run(epochs=20),
                   binary_classifier.run(epochs=2, train_samples=64, test_samples=32),
                   regression.run(epochs=2, samples=128, test_samples=32)]
    for result in results:
        assert result["history"][-1] < result["history"][0] and np.isfinite(result["history"]).all()
    assert results[2]["model"].backend is backend and results[3]["model"].backend is backend
