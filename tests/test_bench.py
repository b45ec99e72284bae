"""``backprop bench`` and ``backprop profile``: tiny configurations (a few milliseconds a figure), checking
what is measured and written, never how fast anything is."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backprop
from backprop.bench import e2e, profile, report, stats, suite
from backprop.bench.kernels import KERNELS, Shape, cases, time_kernels
from backprop.cli import main
from backprop.zoo import MODELS

ROOT = Path(__file__).resolve().parents[1]
TINY = {"tiny": Shape((2, 1, 8, 8), 3, 3, 1)}
# one quick end-to-end configuration, for the CLI
E2E_TINY = ["--only", "e2e", "--backends", "numpy", "--models", "mlp", "--no-torch", "--rounds", "1", "--windows",
            "1", "--window-seconds", "0.001", "--train-images", "100"]


def test_spread_gives_median_quartiles_and_extremes():
    s = stats.spread([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["q1"], s["q3"], s["min"], s["max"], s["n"]) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert stats.spread([2.0])["q1"] == stats.spread([2.0])["q3"] == 2.0
    rate = stats.inverted(s, 60.0)  # seconds -> a rate: the quartiles swap ends
    assert (rate["q1"], rate["median"], rate["q3"]) == (15.0, 20.0, 30.0)
    with pytest.raises(ValueError):
        stats.spread([])


def test_every_kernel_is_timed_on_every_backend(backend):
    assert set(cases(backend, TINY["tiny"])) == set(KERNELS)
    assert {"matmul", "im2col", "conv2d_backward", "maxpool2d_relu_backward", "adam_update"} <= set(KERNELS)
    rows = time_kernels({backend.name: backend}, TINY, rounds=2, min_seconds=0.0, say=lambda line: None)
    assert sorted(r["kernel"] for r in rows) == sorted(KERNELS)
    for r in rows:
        s = r["seconds"]
        assert (r["shape"], r["backend"], s["n"]) == ("tiny", backend.name, 2)
        assert 0 < s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"]


def test_flops_of_a_training_step():
    """Forward MACs of the 784-100-100-10 MLP, x2 for FLOPs, x3 for a step less the first layer's input
    gradient (which nobody computes), x100 images; SimpleConvNet's conv on 28x28 gives 24x24 outputs."""
    macs = [784 * 100, 100 * 100, 100 * 10]
    assert e2e.step_flops(MODELS["mlp"](backend="numpy")) == 2 * (3 * sum(macs) - macs[0]) * 100
    assert e2e.layer_macs(MODELS["simpleconvnet"](backend="numpy")) == [24 * 24 * 30 * 25, 4320 * 100, 100 * 10]


def test_a_job_trains_tests_and_times_with_the_library_step(monkeypatch):
    steps = []
    real = backprop.training.train_step
    monkeypatch.setattr(backprop.training, "train_step", lambda *a: steps.append(1) or real(*a))
    row = e2e.run_job(e2e.Job("numpy", "mlp", train_images=200, windows=2, window_seconds=0.0))
    assert len(steps) == 2 + 2 * row["steps_per_window"]  # the accuracy epoch of 2 batches, then the windows
    assert 0 < row["test_acc"] <= 1 and np.isfinite(row["test_loss"])
    assert len(row["window_images_per_s"]) == 2 and all(v > 0 for v in row["window_images_per_s"])
    assert row["cold_start_s"] > 0 and row["peak_rss_mb"] > 0
    assert "peak_gpu_mb" not in row
    later = e2e.run_job(e2e.Job("numpy", "mlp", train_images=200, accuracy=False, windows=1, window_seconds=0.0))
    assert "test_acc" not in later  # later rounds: warm-up steps instead of the epoch


def _round(rates, **extra):
    return {"window_images_per_s": rates, "cold_start_s": 1.0, "context_s": 0.0, "peak_rss_mb": 100.0,
            "flops_per_step": 1e9, "test_acc": 0.9, "test_loss": 0.3, **extra}


def test_rounds_take_turns_and_ratios_are_to_pytorch_on_the_same_device(monkeypatch):
    order = []

    def child(job):
        order.append(job.impl)
        assert job.accuracy == (len(order) <= 4)  # the accuracy epoch in the first round only
        rate = {"numpy": 100.0, "cupy": 400.0, "torch": 50.0, "torch-cuda": 200.0}[job.impl] * len(order)
        return _round([rate, rate])

    monkeypatch.setattr(e2e, "child", child)
    settings = e2e.Settings(models=("mlp",), backends=("numpy", "cupy"), torch_rows=("torch", "torch-cuda"),
                            rounds=2)
    rows = {r["impl"]: r for r in e2e.run_e2e(settings, say=lambda line: None)}
    assert order == ["numpy", "cupy", "torch", "torch-cuda", "torch-cuda", "torch", "cupy", "numpy"]
    # round 1: numpy 100x1 vs torch 50x3; round 2: numpy 100x8 vs torch 50x6
    assert rows["numpy"]["vs_torch"]["min"] == pytest.approx(100 / 150)
    assert rows["numpy"]["vs_torch"]["max"] == pytest.approx(800 / 300)
    assert rows["cupy"]["vs_torch"]["max"] == pytest.approx(2800 / 1000)  # against torch-cuda, not torch
    assert rows["cupy"]["device"] == "gpu" and rows["numpy"]["device"] == "cpu"
    assert "vs_torch" not in rows["torch"]
    assert e2e.reference("cupy-graph") == "torch-cuda-graph" and e2e.reference("numba") == "torch"
    assert rows["numpy"]["images_per_s"]["n"] == 4 and rows["numpy"]["round_images_per_s"] == [100.0, 800.0]
    assert rows["numpy"]["gflops"]["median"] == pytest.approx(rows["numpy"]["images_per_s"]["median"] / 100)


def test_a_failed_round_is_the_row():
    row = e2e.merge("numpy", "mlp", [_round([1.0]), {"error": "boom"}])
    assert row == {"impl": "numpy", "model": "mlp", "device": "cpu", "error": "boom"}


def test_jobs_run_in_their_own_processes():
    settings = e2e.Settings(models=("mlp",), backends=("numpy",), rounds=2, windows=1, window_seconds=0.0,
                            train_images=100)
    (row,) = e2e.run_e2e(settings, say=lambda line: None)
    assert "error" not in row, row
    assert len(row["round_images_per_s"]) == 2 and row["cold_start_s"]["n"] == 2
    assert 0 < row["test_acc"] <= 1


def test_pytorch_mirrors_compute_what_the_zoo_models_compute():
    pytest.importorskip("torch", reason="PyTorch is optional")
    import torch

    from backprop.bench.torch_models import torch_model
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    for name, make in MODELS.items():
        backprop.manual_seed(0)
        ours = make(backend="numpy")
        ours.eval()
        theirs = torch_model(ours).eval()
        with torch.no_grad():
            got = theirs(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, ours.forward(x), rtol=1e-4, atol=1e-5, err_msg=name)


def test_torch_status_says_why_torch_is_missing(tmp_path, monkeypatch):
    (tmp_path / "torch.py").write_text("raise ImportError('no torch here (test stub)')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    version, cuda, why = suite.torch_status()
    assert version is None and cuda is False and "no torch here" in why
    (tmp_path / "torch.py").write_text("__version__ = '0.0-stub'\nclass cuda:\n    is_available = staticmethod("
                                       "lambda: False)\n")
    assert suite.torch_status() == ("0.0-stub", False, "")


def test_without_torch_the_run_says_why_and_has_no_torch_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "torch_status", lambda: (None, False, "torch is not importable (stub)"))
    monkeypatch.setattr(suite, "matmul_peak", lambda backend: stats.spread([1.0]))
    plan = suite.Plan(e2e.Settings(models=("mlp",), rounds=1, windows=1, window_seconds=0.0, train_images=100),
                      kernels=False)
    lines: list[str] = []
    result, written = suite.run_bench(plan, tmp_path, ["numpy"], say=lines.append)
    assert "PyTorch rows: none, torch is not importable (stub)" in lines
    assert [r["impl"] for r in result["e2e"]] == ["numpy"] and "kernels" not in result
    assert result["notes"] == ["PyTorch rows: none, torch is not importable (stub)"]
    assert Path(written[0]).suffix == ".json"
    assert json.loads(Path(written[0]).read_text()) == json.loads(json.dumps(result))


def test_cli_bench_writes_json_markdown_and_compares_two_runs(tmp_path, capsys):
    assert main(["bench", *E2E_TINY, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "PyTorch rows: none (--no-torch)" in out
    assert re.search(r"^\| mlp \| numpy \| [\d,]+ \([\d,]+-[\d,]+\) \|", out, re.M), out
    (json_path,) = (tmp_path / "a").glob("*.json")
    assert json_path.with_suffix(".md").is_file()
    result = report.read_result(json_path)
    assert result["settings"]["train_images"] == 100 and result["settings"]["rounds"] == 1
    assert result["version"] == backprop.__version__ and result["machine"]["cpus"] >= 1
    compared = subprocess.run([sys.executable, "-m", "backprop", "bench", "--compare", str(json_path), str(json_path)],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)  # the installed backprop
    assert compared.returncode == 0, compared.stderr
    assert re.search(r"^\| mlp \| numpy \| .* \| 1\.00 \|$", compared.stdout, re.M), compared.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "--out", str(Path(backprop.__file__).parent / "results")], "is inside the installed package"),
    (["bench", "--compare", __file__, __file__], "not JSON"),
])
def test_cli_bench_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_bench_refuses_unknown_models_before_measuring(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--models", "mlp,resnet"])
    assert "expected names from" in capsys.readouterr().err


def test_report_reads_peaks_per_device_and_draws_error_bars(tmp_path):
    row = e2e.merge("numba", "mlp", [_round([100.0, 200.0])])
    gpu = {**e2e.merge("cupy", "mlp", [_round([100.0, 200.0], peak_gpu_mb=50.0)])}
    result = {"version": "x", "date": "2026-01-01T00:00:00", "seconds": 1.0, "quick": False, "notes": [],
              "machine": stats.machine(), "matmul_peak_gflops": {"cpu": stats.spread([3.0])},
              "settings": {"train_images": 100, "rounds": 1, "windows": 2, "window_seconds": 0.1},
              "e2e": [row, gpu], "kernels": [{"kernel": "relu", "shape": "tiny", "backend": b,
                                              "seconds": stats.spread([t])} for b, t in (("numpy", 2e-3),
                                                                                         ("numba", 1e-3))]}
    lines = report.e2e_table(result).splitlines()
    assert lines[2].split(" | ")[5] == "50.0"  # numba: 1.5 GFLOP/s of a 3 GFLOP/s CPU peak
    assert lines[3].split(" | ")[5] == "-" and lines[3].split(" | ")[8] == "50"  # no GPU peak measured
    assert "| relu | tiny | 2.000 (2.000-2.000) | 1.000 (1.000-1.000) | 2.00x |" in report.kernel_table(result)
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib, an optional extra")
    assert report.plot(result, tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_profile_times_every_layer_and_kernel_of_the_library_step(backend):
    result = profile.profile_model("lenet5", backend, steps=2, batch_size=4, warmup=1)
    names = [r["name"] for r in result["layers"]]
    assert names[:2] == ["optimizer Adam begin_step", "0 Conv2D forward"] and names[-1] == "optimizer Adam apply"
    assert "0 Conv2D backward" in names and "loss SoftmaxCrossEntropy backward" in names
    assert {r["name"] for r in result["kernels"]} <= set(KERNELS)
    assert {"conv2d_forward", "conv2d_backward", "adam_update"} <= {r["name"] for r in result["kernels"]}
    for rows in (result["layers"], result["kernels"]):
        assert sum(r["share"] for r in rows) == pytest.approx(1.0)
        assert all(r["ms"]["n"] == 2 and r["calls"] >= 1 for r in rows)
    assert not set(KERNELS) & set(vars(backend))  # the instrumentation is taken off again
    text = profile.format_profile(result)
    assert "per layer" in text and "per kernel" in text and "adam_update (x10)" in text


def test_a_call_inside_another_counts_for_itself_only(monkeypatch):
    ticks = iter(range(100))
    monkeypatch.setattr(profile.time, "perf_counter", lambda: float(next(ticks)))
    rec = profile.Recorder(lambda: None)
    inner = rec.wrap("inner", lambda: None)
    outer = rec.wrap("outer", lambda: inner())
    outer()  # outer starts at 0, inner runs from 1 to 2, outer ends at 3
    assert dict(rec.seconds) == {"inner": 1.0, "outer": 2.0} and dict(rec.calls) == {"outer": 1, "inner": 1}
    again = rec.wrap("outer", lambda: None)
    rec.wrap("outer", lambda: again())()
    assert rec.calls["outer"] == 2  # a same-label call inside is not counted again


def test_cli_profile_prints_tables_and_writes_json(tmp_path, capsys):
    path = tmp_path / "p.json"
    assert main(["profile", "--model", "mlp", "--backend", "numpy", "--steps", "2", "--batch-size", "10",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mlp on numpy, batch 10" in out and "1 Linear forward" in out and "matmul" in out
    assert json.loads(path.read_text())["model"] == "mlp"


def test_readme_performance_table_is_generated_from_the_committed_json():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        readme_table = importlib.import_module("readme_table")
    finally:
        sys.path.remove(str(ROOT / "bench"))
    readme = (ROOT / "README.md").read_text()
    body = readme.split(readme_table.BEGIN + "\n")[1].split(readme_table.END)[0]
    source = re.search(r"\(`(bench/results/[^`]+\.json)`\)", body)
    assert source, "README's Performance section names no committed JSON"
    assert readme_table.replaced(readme, readme_table.section(ROOT / source.group(1))) == readme
