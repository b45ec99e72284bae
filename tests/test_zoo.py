"""The model zoo: architectures as specified, every model trains a step, and SimpleConvNet really learns."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp
from backprop.zoo import MODELS, build_model, deep_conv_net, simple_conv_net


def kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def test_simple_conv_net_is_the_classic_one():
    model = simple_conv_net()
    assert kinds(model) == ["Conv2D", "ReLUMaxPool2D", "Flatten", "Linear", "Linear"]
    conv, fc1, fc2 = model[0], model[3], model[4]
    assert (fc1.activation, fc2.activation) == ("relu", None)
    assert conv.W.shape == (30, 1, 5, 5) and fc1.W.shape == (4320, 100) and fc2.W.shape == (100, 10)
    assert sum(p.size for p in model.parameters()) == 433_890


def test_deep_conv_net_has_six_convolutions_and_two_linear_layers_with_dropout():
    model = deep_conv_net()
    assert kinds(model).count("Conv2D") == 6 and kinds(model).count("Linear") == 2
    assert kinds(model).count("Dropout") == 2 and kinds(model).count("ReLUMaxPool2D") == 3
    assert [m.W.shape[0] for m in model.layers if type(m).__name__ == "Conv2D"] == [16, 16, 32, 32, 64, 64]
    assert model[-4].W.shape == (1024, 50) and model[-4].activation == "relu"


@pytest.mark.parametrize("name", MODELS)
def test_every_model_runs_forward_and_backward(name, backend):
    model = build_model(name, backend=backend)
    x = backend.asarray(np.random.default_rng(0).random((2, 1, 28, 28)))
    out = model.forward(x)
    assert out.shape == (2, 10) and model.backend is backend
    loss = bp.SoftmaxCrossEntropy(backend)
    loss.forward(out, backend.asarray(np.array([3, 7])))
    assert model.backward(loss.backward()).shape == x.shape
    assert all(float(abs(p.grad).sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_other_image_sizes_and_classes(name):
    model = build_model(name, in_channels=3, image_size=32, classes=5)
    assert model.predict(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 5)


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="simpleconvnet, lenet5, mlp, deepconvnet"):
        build_model("resnet")
    assert kinds(build_model("Simple-Conv-Net")) == kinds(simple_conv_net())


def test_simple_conv_net_learns_the_embedded_subset(tmp_path):
    """CI's accuracy check: a short run on part of the embedded MNIST subset (a few seconds)."""
    from backprop.runs import RunConfig, train

    config = RunConfig(backend="numpy", epochs=2, train_limit=3000, test_limit=500, seed=0)
    history = train(config, tmp_path / "run", progress=False, say=lambda line: None)
    # Seeds 0-3 give 89.4-90.6% (chance is 10%); the margin absorbs BLAS and platform differences.
    assert history[-1]["val_accuracy"] > 0.85, history
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.parametrize("name, smallest", [("simpleconvnet", 6), ("lenet5", 12), ("deepconvnet", 4)])
def test_images_too_small_for_an_architecture_are_refused_by_name(name, smallest):
    bp.zoo.build_model(name, image_size=smallest).forward(np.zeros((1, 1, smallest, smallest), np.float32))
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest} pixels"):
        bp.zoo.build_model(name, image_size=smallest - 1)
