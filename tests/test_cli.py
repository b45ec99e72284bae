"""The ``backprop`` command line: a short training run, exact resumption, Ctrl-C, eval, plot, info,
and argparse-style errors for bad arguments."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop.backends import available_backends
from backprop.checkpoint import load_arrays
from backprop.cli import main
from backprop.optim import Optimizer

# A few seconds each: a slice of the embedded subset.
SMALL = ["--backend", "numpy", "--train-limit", "300", "--test-limit", "100", "--batch-size", "50", "--no-progress"]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """Runs use the embedded subset, whatever the machine has in $BACKPROP_DATA or its cache."""
    monkeypatch.delenv("BACKPROP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def run_files(run_dir: Path) -> dict[str, np.ndarray]:
    arrays, _ = load_arrays(run_dir / "checkpoint.npz")
    return arrays


def assert_same_state(a: Path, b: Path) -> None:
    left, right = run_files(a), run_files(b)
    assert sorted(left) == sorted(right)
    assert any(k.startswith("optim/") for k in left)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)
    meta_a, meta_b = load_arrays(a / "checkpoint.npz")[1], load_arrays(b / "checkpoint.npz")[1]
    for key in ("optimizer", "loader", "backend_rng", "progress"):
        assert meta_a[key] == meta_b[key], key
    drop = ("seconds", "images_per_s", "eval_seconds")
    assert ([{k: v for k, v in row.items() if k not in drop} for row in meta_a["history"]]
            == [{k: v for k, v in row.items() if k not in drop} for row in meta_b["history"]])


def after_step(monkeypatch, n, action):
    """Make the optimizer call ``action(optimizer)`` after its ``n``-th update (``apply``, the device half of
    a step, which train_step calls); returns the real ``apply``."""
    step, calls = Optimizer.apply, [0]

    def step_then_act(self):
        step(self)
        calls[0] += 1
        if calls[0] == n:
            action(self)

    monkeypatch.setattr(Optimizer, "apply", step_then_act)
    return step


def test_train_smoke(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "using the embedded MNIST subset" in out
    assert "epoch 1/1  loss" in out and "test acc" in out and "img/s" in out
    run = tmp_path / "run"
    for name in ("config.json", "checkpoint.npz", "model.npz", "metrics.csv", "metrics.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 1 and 0 <= float(rows[0]["val_accuracy"]) <= 1 and float(rows[0]["images_per_s"]) > 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "simpleconvnet" and config["data_source"] == "embedded subset"
    assert not list(run.glob(".*tmp"))  # atomic writes leave no temporaries
    import backprop as bp
    bp.zoo.simple_conv_net().load(run / "model.npz")  # the weights load into a fresh zoo model


@pytest.mark.parametrize("model, backend", [("simpleconvnet", "numpy"), ("deepconvnet", "numpy"),  # Dropout's
                                            ("simpleconvnet", "numba")])                 # generator too
def test_resume_equals_uninterrupted_training(tmp_path, model, backend):
    if available_backends()[backend] is not None:
        pytest.skip(f"backend {backend!r} unavailable: {available_backends()[backend]}")
    common = ["--model", model, "--seed", "3", *SMALL, "--backend", backend]
    assert main(["train", "--epochs", "2", "--run-dir", "straight", *common]) == 0
    assert main(["train", "--epochs", "1", "--run-dir", "split", *common]) == 0
    assert main(["train", "--resume", "split", "--epochs", "2", "--no-progress"]) == 0
    assert_same_state(tmp_path / "straight", tmp_path / "split")


def test_ctrl_c_saves_mid_epoch_and_resume_is_exact(tmp_path, monkeypatch, capsys):
    assert main(["train", "--epochs", "2", "--run-dir", "straight", *SMALL]) == 0
    step = after_step(monkeypatch, 8, lambda opt: signal.raise_signal(signal.SIGINT))  # epoch 2, batch 2 of 6
    assert main(["train", "--epochs", "2", "--run-dir", "cut", *SMALL]) == 130
    out = capsys.readouterr().out
    assert "stopped in epoch 2 after batch 2/6" in out and "--resume cut" in out
    assert load_arrays(tmp_path / "cut" / "checkpoint.npz")[1]["progress"]["batch"] == 2
    monkeypatch.setattr(Optimizer, "apply", step)
    assert main(["train", "--resume", "cut", "--no-progress"]) == 0
    assert "resuming at epoch 2, batch 3 of 6" in capsys.readouterr().out
    assert_same_state(tmp_path / "straight", tmp_path / "cut")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_of_a_finished_run_says_so(capsys):
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    assert main(["train", "--resume", "run", "--no-progress"]) == 0
    assert "already trained 1 epochs" in capsys.readouterr().out


def test_eval_prints_accuracy_and_confusion_matrix(capsys):
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    capsys.readouterr()
    assert main(["eval", "run/checkpoint.npz", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "on the 1,000 test images of MNIST" in out and "accuracy" in out
    table = [line for line in out.splitlines() if line.strip().endswith("%") and "accuracy" not in line]
    assert len(table) == 10
    counts = [int(v) for line in table for v in line.split()[1:-1]]
    assert sum(counts) == 1000  # every test image lands in one cell
    assert main(["eval", "run"]) == 0  # a run folder works as well


def test_plot(tmp_path, capsys, monkeypatch):
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["plot", "run"]) == 1
    assert "pip install 'backprop[plot]'" in capsys.readouterr().err
    monkeypatch.undo()
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "run", "-o", "curves.png"]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "expected a positive integer"),
    (["train", "--lr", "fast"], "expected a positive number"),
    (["train", "--lr", "-1"], "expected a positive number"),
    (["train", "--lr", "nan"], "expected a positive number"),
    (["train", "--weight-decay", "-0.1"], "expected a number >= 0"),
    (["train", "--seed", "-1"], "argument --seed: expected a non-negative integer"),
    (["train", "--model", "resnet"], "invalid choice"),
    (["train", "--backend", "tpu"], "invalid choice"),
    (["train", "--dataset", "cifar"], "invalid choice"),
    (["train", "--resume", "x", "--run-dir", "y"], "not allowed with"),
    (["train", "--resume", "x", "--lr", "0.1"], "--lr cannot change on --resume"),
    (["train", "--resume", "", *SMALL], "argument --resume: expected a path, got an empty string"),
    (["train", "--run-dir", "", *SMALL], "argument --run-dir: expected a path, got an empty string"),
    (["train", "--data-dir", " ", *SMALL], "argument --data-dir: expected a path, got an empty string"),
    (["eval", ""], "argument CHECKPOINT: expected a path"),
    (["eval", "run", "--data-dir", ""], "argument --data-dir: expected a path"),
    (["plot", ""], "argument RUN_DIR: expected a path"),
    (["plot", "run", "-o", ""], "argument -o/--output: expected a path"),
    (["eval"], "required"),
    ([], "required"),
])
def test_bad_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--resume", "nowhere"], "not a run folder"),
    (["eval", "missing.npz"], "no checkpoint at"),
    (["train", "--dataset", "fashion-mnist", *SMALL], "Fashion-MNIST not found"),
    (["train", "--data-dir", "empty", *SMALL], "MNIST files not found in empty"),
    (["train", "--resume", "broken"], "not a valid run configuration"),
    (["train", "--resume", "a-list"], "expected a JSON object, got list"),
    (["train", "--resume", "text-epochs"], "'epochs' must be int, got '3'"),
    (["train", "--resume", "float16"], "'dtype' must be one of float32, float64, got 'float16'"),
    (["train", "--resume", "dtype-3"], "'dtype' must be str, got 3"),
    (["train", "--resume", "zero-lr"], "'lr' must be a finite number > 0, got 0"),
    (["train", "--resume", "no-model"], "'model' must be one of simpleconvnet,"),
    (["train", "--run-dir", "a-file/run", *SMALL], "a-file/run: Not a directory"),
    (["train", "--run-dir", "a-file", *SMALL], "a-file: File exists"),
    (["plot", "bad-metrics"], "bad-metrics/metrics.json: record 0 must hold numbers for epoch, loss,"),
    (["plot", "not-json"], "not-json/metrics.json: not valid JSON"),
    (["plot", "a-dict"], "a-dict/metrics.json: must be a list of epoch records, not dict"),
])
def test_user_errors_are_one_line(argv, message, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("")
    for name, text in [("broken", '{"model": '), ("a-list", "[1]"), ("text-epochs", '{"epochs": "3"}'),
                       ("float16", '{"dtype": "float16"}'), ("dtype-3", '{"dtype": 3}'), ("zero-lr", '{"lr": 0}'),
                       ("no-model", '{"model": "resnet"}'), ("bad-metrics", "{}"), ("not-json", "{}"),
                       ("a-dict", "{}")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(text)
    (tmp_path / "bad-metrics" / "metrics.json").write_text('[{"epoch": 1, "loss": 0.5}]')
    (tmp_path / "not-json" / "metrics.json").write_bytes(b"\xff[")
    (tmp_path / "a-dict" / "metrics.json").write_text('{"epoch": 1}')
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1, err


def test_zero_weight_decay_is_accepted_however_written():
    from backprop.cli import build_parser
    for text in ("0", "0.00", "0e0"):
        assert build_parser().parse_args(["train", "--weight-decay", text]).weight_decay == 0


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    from backprop import runs
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20260101-000000")
    config = runs.RunConfig(model="mlp", dataset="mnist-subset")
    made = [runs.new_run_dir(config, tmp_path / "runs") for _ in range(3)]
    assert [p.name for p in made] == ["mlp-mnist-subset-20260101-000000", "mlp-mnist-subset-20260101-000000-2",
                                      "mlp-mnist-subset-20260101-000000-3"]
    assert all(p.is_dir() for p in made)


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data-dir", "empty", *SMALL]) == 1
    assert "MNIST files not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs").mkdir()  # a runs/ folder that was there before stays
    assert main(["train", "--data-dir", "empty", *SMALL]) == 1
    assert (tmp_path / "runs").is_dir() and not any((tmp_path / "runs").iterdir())


def test_resume_reads_the_run_s_data_from_anywhere_and_refuses_other_data(tmp_path, monkeypatch, capsys):
    from test_mnist import write_fake
    write_fake(tmp_path / "data" / "a", n_train=120, n_test=40, seed=1)
    write_fake(tmp_path / "elsewhere" / "data" / "a", n_train=120, n_test=40, seed=2)  # same names, other pixels
    args = ["--model", "mlp", "--backend", "numpy", "--batch-size", "50", "--no-progress"]
    assert main(["train", "--epochs", "1", "--data-dir", "data/a", "--run-dir", "run", *args]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_source"] == str((tmp_path / "data" / "a").resolve())
    assert len(config["data_sha256"]) == 64
    monkeypatch.chdir(tmp_path / "elsewhere")  # a relative data/a here would be other files
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]) == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--data-dir", "data/a",
                 "--no-progress"]) == 1
    assert "are not the ones" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())) == 2  # nothing trained on them


def _edit(arrays: dict, meta: dict, edit: str) -> None:
    opt = meta["optimizer"]
    if edit == "no optimizer arrays":
        for k in [k for k in arrays if k.startswith("optim/")]:
            del arrays[k]
    elif edit == "float64 optimizer arrays":
        arrays.update({k: v.astype(np.float64) for k, v in arrays.items() if k.startswith("optim/")})
    elif edit == "NaN in the optimizer state":
        arrays["optim/0.m"] = np.full_like(arrays["optim/0.m"], np.nan)
    elif edit == "NaN learning rate":
        opt["lr"] = float("nan")
    elif edit == "negative step count":
        opt["steps"] = -5
    elif edit == "no progress":
        del meta["progress"]
    elif edit == "an extra member":
        arrays["other/x"] = np.zeros(3)
    elif edit == "stopped past the epoch's end":
        meta["progress"]["batch"] = 99
        arrays["loader/order"] = np.arange(300)
    elif edit == "mid-epoch without the order":
        meta["progress"]["batch"] = 1
    elif edit == "an order of the wrong images":
        meta["progress"]["batch"] = 1
        arrays["loader/order"] = np.arange(5)
    elif edit == "history not a list":
        meta["history"] = {"epoch": 1}
    elif edit == "a history record without its loss":
        meta["history"] = [{"epoch": 1}]
    elif edit == "a damaged generator state":
        meta["backend_rng"] = {"bit_generator": "PCG64", "state": "x"}
    elif edit == "a generator state of another kind":
        meta["backend_rng"] = [1, 2]
    elif edit == "no config":
        del meta["config"]
    elif edit == "a config with a damaged dtype":
        meta["config"]["dtype"] = "float16"


@pytest.mark.parametrize("edit, message", [
    ("no optimizer arrays", "missing ['optim/0.m', 'optim/0.v'"),
    ("float64 optimizer arrays", "is float64"),
    ("NaN in the optimizer state", "holds NaN or inf"),
    ("NaN learning rate", "the saved learning rate must be finite"),
    ("negative step count", "step count must be an int >= 0"),
    ("no progress", "'progress' must hold"),
    ("stopped past the epoch's end", "an epoch of this run has 6"),
    ("mid-epoch without the order", "missing ['loader/order']"),
    ("an extra member", "unexpected ['other/x']"),
    ("an order of the wrong images", "is not an order of the run's 300 training images"),
    ("history not a list", "'history' must be a list of epoch records, not dict"),
    ("a history record without its loss", "'history' record 0 must hold numbers for epoch, loss"),
    ("a damaged generator state", "'backend_rng' is not a state of the backend's generator"),
    ("a generator state of another kind", "'backend_rng' must be a generator state or null"),
    ("no config", "its 'config' is not a valid run configuration (expected a JSON object, got NoneType)"),
    ("a config with a damaged dtype", "its 'config' is not a valid run configuration ('dtype' must be one of"),
])
def test_a_damaged_checkpoint_is_refused_before_training(tmp_path, capsys, edit, message):
    import shutil

    from backprop.checkpoint import save_arrays
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    shutil.copytree(tmp_path / "run", tmp_path / "bad")
    arrays, meta = load_arrays(tmp_path / "bad" / "checkpoint.npz")
    _edit(arrays, meta, edit)
    save_arrays(tmp_path / "bad" / "checkpoint.npz", arrays, meta)
    before = (tmp_path / "bad" / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", "bad", "--epochs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert message in err and "checkpoint.npz" in err and "Traceback" not in err, err
    assert (tmp_path / "bad" / "checkpoint.npz").read_bytes() == before
    if "config" in edit:  # eval reads the checkpoint's config
        assert main(["eval", "bad"]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_an_existing_run_is_not_overwritten(capsys):
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 1
    assert "--resume run" in capsys.readouterr().err


def test_eval_of_plain_weights_explains(tmp_path, capsys):
    import backprop as bp
    bp.zoo.mlp().save(tmp_path / "weights.npz")
    assert main(["eval", "weights.npz"]) == 1
    assert "Sequential.load" in capsys.readouterr().err


def test_console_entry_points_without_a_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("BACKPROP_DATA", "CUDA_VISIBLE_DEVICES")}
    env["CUDA_VISIBLE_DEVICES"] = ""  # as on a machine without a GPU
    info = subprocess.run([sys.executable, "-m", "backprop", "info"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert info.returncode == 0, info.stderr
    for expected in ("backprop 0.1.0", "numpy", "backends:", "GPU:", "BLAS:", "threads:"):
        assert expected in info.stdout
    assert "numpy    available" in info.stdout
    helped = subprocess.run([sys.executable, "-m", "backprop", "train", "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert helped.returncode == 0 and "--resume RUN_DIR" in helped.stdout


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_divergence_never_overwrites_a_good_checkpoint(tmp_path, monkeypatch, capsys):
    """The weights turn NaN in epoch 2: the run stops with one line, and checkpoint.npz and model.npz
    still hold epoch 1, from which the run resumes."""
    def poison(opt):
        opt.params[0].data[...] = np.nan
    step = after_step(monkeypatch, 8, poison)  # epoch 2, batch 2 of 6
    assert main(["train", "--epochs", "3", "--run-dir", "run", *SMALL]) == 1
    err = capsys.readouterr().err
    assert "became nan at or before epoch 2" in err and "checkpoint.npz still holds epoch 1" in err, err
    arrays, meta = load_arrays(tmp_path / "run" / "checkpoint.npz")
    assert meta["progress"]["epoch"] == 1 and len(meta["history"]) == 1
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
    assert all(np.isfinite(a).all() for a in load_arrays(tmp_path / "run" / "model.npz")[0].values())
    monkeypatch.setattr(Optimizer, "apply", step)
    assert main(["train", "--resume", "run", "--no-progress"]) == 0
    assert load_arrays(tmp_path / "run" / "checkpoint.npz")[1]["progress"]["epoch"] == 3


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_divergence_in_the_first_epoch_says_there_is_no_checkpoint(capsys):
    assert main(["train", "--epochs", "2", "--lr", "1e30", "--run-dir", "run", *SMALL]) == 1
    err = capsys.readouterr().err
    assert "no epoch finished, so run holds no checkpoint" in err and "Traceback" not in err


def test_a_run_of_an_older_format_is_refused_with_a_reason(tmp_path, capsys):
    from backprop.checkpoint import save_arrays
    assert main(["train", "--epochs", "1", "--run-dir", "run", *SMALL]) == 0
    arrays, meta = load_arrays(tmp_path / "run" / "checkpoint.npz")
    save_arrays(tmp_path / "run" / "checkpoint.npz", arrays, {**meta, "format": "backprop.run/1"})
    capsys.readouterr()
    assert main(["train", "--resume", "run", "--epochs", "2", "--no-progress"]) == 1
    assert "written by another version of backprop (format 'backprop.run/1'" in capsys.readouterr().err


def test_a_subcommand_s_bad_argument_shows_that_subcommand_s_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--bogus"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage: backprop train" in err and "unrecognized arguments: --bogus" in err


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`backprop train ... | head -1`: the reader goes away after one line; the run stops with status 141
    (SIGPIPE's), no traceback and no "Exception ignored" at exit."""
    proc = subprocess.Popen([sys.executable, "-m", "backprop", "train", "--epochs", "3", "--run-dir", "run", *SMALL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, text=True)
    assert proc.stdout.readline().startswith("using the embedded MNIST subset")
    proc.stdout.close()  # as head does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141 and err == "", err


def test_plot_without_matplotlib_is_refused_before_training(monkeypatch, capsys, tmp_path):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib"
                        else find_spec(name, *a))
    with pytest.raises(SystemExit):
        main(["train", "--plot", "--epochs", "1", "--run-dir", "run", *SMALL])
    assert "--plot needs matplotlib" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_an_unknown_default_backend_is_named_at_once(monkeypatch, capsys):
    import backprop as bp
    monkeypatch.setenv("BACKPROP_BACKEND", "bogus")
    assert main(["info"]) == 0
    assert "bogus (from $BACKPROP_BACKEND, which is not a backend" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"unknown backend 'bogus' \(from \$BACKPROP_BACKEND\)"):
        bp.Linear(2, 2)


def test_help_shows_fit_s_real_arguments():
    import inspect

    import backprop as bp
    params = inspect.signature(bp.Sequential.fit).parameters
    assert list(params)[:3] == ["self", "x", "y"] and {"loss", "optimizer", "callbacks"} <= set(params)
    assert "epochs" in (bp.Sequential.fit.__doc__ or "")
