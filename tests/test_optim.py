"""Optimizer updates against hand-written formulas, weight decay, clipping, schedules, and state that
lives (and moves) with the parameters."""

from __future__ import annotations

import numpy as np
import pytest

import backprop as bp


def run(opt_cls, backend, grads, **kwargs):
    """Apply ``opt_cls`` to one parameter starting at [1, -2, 3] with the given gradients."""
    p = bp.Parameter(backend.asarray(np.array([1.0, -2.0, 3.0])), backend)
    opt = opt_cls([p], **kwargs)
    for g in grads:
        p.grad[...] = backend.asarray(np.array(g))
        opt.step()
    return backend.to_numpy(p.data), p


GRADS = [[0.5, -1.0, 2.0], [0.1, 0.3, -0.2], [1.0, 0.0, 1.0]]


def reference(name, grads, lr, **kw):
    w = np.array([1.0, -2.0, 3.0])
    state = {k: np.zeros(3) for k in ("v", "m", "s")}
    for t, g in enumerate(map(np.array, grads), 1):
        g = g + kw.get("wd", 0.0) * w if name != "adamw" else g
        if name == "sgd":
            w = w - lr * g
        elif name == "momentum":
            state["v"] = kw["mu"] * state["v"] + g
            w = w - lr * (g + kw["mu"] * state["v"] if kw.get("nesterov") else state["v"])
        elif name == "adagrad":
            state["s"] += g * g
            w = w - lr * g / (np.sqrt(state["s"]) + 1e-10)
        elif name == "rmsprop":
            state["s"] = 0.9 * state["s"] + 0.1 * g * g
            w = w - lr * g / (np.sqrt(state["s"]) + 1e-8)
        else:  # adam / adamw, textbook form with bias-corrected moments
            if name == "adamw":
                w = w * (1 - lr * kw["wd"])
            state["m"] = 0.9 * state["m"] + 0.1 * g
            state["v"] = 0.999 * state["v"] + 0.001 * g * g
            m_hat, v_hat = state["m"] / (1 - 0.9 ** t), state["v"] / (1 - 0.999 ** t)
            w = w - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return w


@pytest.mark.parametrize("name,make", [
    ("sgd", lambda ps: bp.SGD(ps, lr=0.1)),
    ("sgd", lambda ps: bp.SGD(ps, lr=0.1, weight_decay=0.01)),
    ("momentum", lambda ps: bp.Momentum(ps, lr=0.1)),
    ("momentum", lambda ps: bp.SGD(ps, lr=0.1, momentum=0.9, nesterov=True)),
    ("adagrad", lambda ps: bp.AdaGrad(ps, lr=0.1)),
    ("rmsprop", lambda ps: bp.RMSProp(ps, lr=0.01, rho=0.9)),
    ("adam", lambda ps: bp.Adam(ps, lr=0.01)),
    ("adam", lambda ps: bp.Adam(ps, lr=0.01, weight_decay=0.1)),
    ("adamw", lambda ps: bp.AdamW(ps, lr=0.01, weight_decay=0.1)),
])
def test_update_matches_formula(backend64, name, make):
    got, _ = run(lambda ps: make(ps), backend64, GRADS)
    opt = make([bp.Parameter(backend64.zeros((1,)), backend64)])
    kw = {"mu": getattr(opt, "momentum", 0.0), "nesterov": getattr(opt, "nesterov", False),
          "wd": opt.weight_decay}
    np.testing.assert_allclose(got, reference(name, GRADS, opt.lr, **kw), rtol=1e-10)


def test_updates_keep_float32(backend):
    for cls in (bp.SGD, bp.Momentum, bp.AdaGrad, bp.RMSProp, bp.Adam, bp.AdamW):
        got, p = run(cls, backend, GRADS)
        assert got.dtype == np.float32 and all(v.dtype == np.float32 for v in p.state.values())


def test_clip_grad_norm(backend):
    ps = [bp.Parameter(backend.zeros((2,)), backend) for _ in range(2)]
    ps[0].grad[...] = backend.asarray(np.array([3.0, 0.0]))
    ps[1].grad[...] = backend.asarray(np.array([0.0, 4.0]))
    below = [backend.to_numpy(p.grad).copy() for p in ps]
    assert float(bp.clip_grad_norm(ps, 5.0)) == pytest.approx(5.0)  # at the limit: not scaled, not a bit
    for p, g in zip(ps, below, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(p.grad), g)
    norm = bp.clip_grad_norm(ps, 1.0)
    assert norm.dtype == np.float32 and float(norm) == pytest.approx(5.0)  # (on the device: no host read)
    np.testing.assert_allclose(backend.to_numpy(ps[0].grad), [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(ps[1].grad), [0.0, 0.8], rtol=1e-5)
    got, _ = run(bp.SGD, backend, [[30.0, 0.0, 40.0]], lr=1.0, clip_norm=5.0)
    np.testing.assert_allclose(got, [1 - 3.0, -2.0, 3 - 4.0], rtol=1e-5)


def test_schedules(backend):
    p = [bp.Parameter(backend.zeros((1,)), backend)]
    step = bp.StepLR(bp.SGD(p, lr=1.0), step_size=2, gamma=0.5)
    assert [step.step() for _ in range(5)] == [1.0, 0.5, 0.5, 0.25, 0.25]
    exp = bp.ExponentialLR(bp.SGD(p, lr=1.0), gamma=0.9)
    assert [round(exp.step(), 6) for _ in range(2)] == [0.9, 0.81]
    cos = bp.CosineAnnealingLR(bp.SGD(p, lr=1.0), t_max=4, eta_min=0.1)
    lrs = [cos.step() for _ in range(5)]
    assert lrs[1] == pytest.approx(0.55) and lrs[3] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.1)
    assert cos.optimizer.lr == pytest.approx(0.1)


@pytest.mark.parametrize("kwargs,expected", [
    ({"lr": 0.0}, "learning rate"), ({"lr": 0.1, "momentum": 1.0}, "momentum"),
    ({"lr": 0.1, "nesterov": True}, "Nesterov"), ({"lr": 0.1, "clip_norm": -1}, "clip_norm"),
    # NaN fails every comparison, so each of these once slipped through a check written as "<= 0"
    ({"lr": float("nan")}, "learning rate"), ({"lr": float("inf")}, "learning rate"),
    ({"lr": 0.1, "weight_decay": float("nan")}, "weight_decay"),
    ({"lr": 0.1, "clip_norm": float("nan")}, "clip_norm"), ({"lr": 0.1, "momentum": float("nan")}, "momentum"),
])
def test_bad_optimizer_arguments(backend, kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        bp.SGD([bp.Parameter(backend.zeros((1,)), backend)], **kwargs)


@pytest.mark.parametrize("make,expected", [
    (lambda p: bp.Adam(p, eps=0.0), "eps"), (lambda p: bp.AdamW(p, eps=-1e-8), "eps"),
    (lambda p: bp.RMSProp(p, eps=float("nan")), "eps"), (lambda p: bp.AdaGrad(p, eps=0), "eps"),
    (lambda p: bp.RMSProp(p, rho=1.0), "rho"), (lambda p: bp.Adam(p, betas=(0.9, float("nan"))), "betas"),
])
def test_bad_adaptive_optimizer_arguments(backend, make, expected):
    """eps = 0 would divide by zero wherever a running square is 0 (a weight whose gradient has been 0)."""
    with pytest.raises(ValueError, match=expected):
        make([bp.Parameter(backend.zeros((1,)), backend)])


@pytest.mark.parametrize("make,expected", [
    (lambda opt: bp.StepLR(opt, 1, gamma=-1), "gamma"), (lambda opt: bp.ExponentialLR(opt, gamma=0), "gamma"),
    (lambda opt: bp.ExponentialLR(opt, gamma=float("nan")), "gamma"),
    (lambda opt: bp.CosineAnnealingLR(opt, t_max=4, eta_min=-1), "eta_min"),
    (lambda opt: bp.CosineAnnealingLR(opt, t_max=float("nan")), "t_max"),
    (lambda opt: bp.StepLR(opt, step_size=float("nan")), "step_size"),
])
def test_schedules_refuse_bad_arguments(backend, make, expected):
    opt = bp.SGD([bp.Parameter(backend.zeros((1,)), backend)], lr=0.1)
    with pytest.raises(ValueError, match=expected):
        make(opt)


def test_optimizer_needs_parameters():
    with pytest.raises(ValueError, match="no parameters"):
        bp.Adam([])


def test_hyperparameters_of_the_wrong_type_are_type_errors(backend):
    p = [bp.Parameter(backend.zeros((1,)), backend)]
    for kwargs in ({"lr": "0.1"}, {"lr": None}, {"lr": True}, {"lr": 0.1, "momentum": "0.9"}):
        with pytest.raises(TypeError, match="must be a real number"):
            bp.SGD(p, **kwargs)


def _step(opt):
    for q in opt.params:
        q.grad[...] = 1
    opt.step()


def test_state_dict_round_trips_after_switching_optimizers(backend):
    """State lives on the parameters: another optimizer's arrays there are not this one's to save."""
    p = [bp.Parameter(backend.asarray(np.ones((2, 3), np.float32)), backend)]
    _step(bp.Adam(p))
    sgd = bp.SGD(p, lr=0.1, momentum=0.9)
    _step(sgd)
    state = sgd.state_dict()
    assert sorted(state["state"]) == ["0.velocity"]
    sgd.load_state_dict(state)
    assert sorted(p[0].state) == ["velocity"]


def test_a_custom_optimizer_without_state_names_still_round_trips(backend):
    class HeavyBall(bp.Optimizer):
        def update(self, q, grad):
            buf = self.state(q, "buf")
            buf *= 0.5
            buf += grad
            q.data -= self.lr * buf

    p = [bp.Parameter(backend.asarray(np.ones((2,), np.float32)), backend)]
    opt = HeavyBall(p, lr=0.1)
    _step(opt)
    state = opt.state_dict()
    state["steps"] = np.int64(state["steps"])  # NumPy integers count as ints
    fresh = HeavyBall(p, lr=0.1)
    fresh.load_state_dict(state)
    assert fresh.steps == 1 and sorted(p[0].state) == ["buf"]


@pytest.mark.parametrize("make", [lambda ps: bp.SGD(ps, lr=0.1, momentum=0.9), lambda ps: bp.Adam(ps, lr=0.1),
                                  lambda ps: bp.AdamW(ps, lr=0.1)])
def test_step_scalars_follow_a_model_moved_to_another_dtype(backend, make):
    """The learning rate (and Adam's corrections) live on the device in the parameters' dtype: a model
    converted between steps gets them in its new dtype, and its updates stay in that dtype."""
    model = bp.Linear(3, 2, backend=backend)
    opt = make(model.parameters())
    for dtype in (np.float32, np.float64):
        model.to(dtype=dtype)
        on = backend.with_dtype(dtype)
        model.forward(on.asarray(np.ones((4, 3), dtype)))
        model.backward_params(on.asarray(np.ones((4, 2), dtype)))
        before = backend.to_numpy(model.W.data).copy()
        opt.step()
        assert model.W.data.dtype == dtype and not np.array_equal(backend.to_numpy(model.W.data), before)
        assert [v.dtype for v in opt._scalars[model.W.backend.name, np.dtype(dtype)].values()] == [dtype] * len(
            opt.step_scalars())
