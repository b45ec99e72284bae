"""bench/e2e.py runs end to end on tiny settings, writes well-formed JSON, and reports a missing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "e2e.py"


def test_e2e_quick_numpy_mlp_without_torch(tmp_path):
    env = {**os.environ, "BACKPROP_BENCH_NO_TORCH": "1"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--backends", "numpy", "--models", "mlp",
                        "--steps", "2", "--windows", "2", "--train-images", "200", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torch: not measured (disabled by BACKPROP_BENCH_NO_TORCH)" in r.stdout
    assert "| peak GPU MB |" in r.stdout
    assert "| mlp | numpy |" in r.stdout
    files = list(tmp_path.glob("*-e2e-quick.json"))
    assert len(files) == 1, list(tmp_path.iterdir())
    assert files[0].with_suffix(".md").exists()
    result = json.loads(files[0].read_text())
    for key in ("machine", "matmul_peak_gflops", "quick", "batch_size", "rows", "torch", "flops_convention",
                "accuracy_train_images"):
        assert key in result
    assert result["quick"] is True and result["accuracy_train_images"] == 200
    assert result["torch"]["available"] is False and result["torch"]["cuda"] is False
    assert result["matmul_peak_gflops"] > 0
    assert len(result["rows"]) == 1
    row = result["rows"][0]
    assert (row["backend"], row["model"]) == ("numpy", "mlp")
    for key in ("cold_start_s", "images_per_s", "s_per_epoch", "gflops", "flops_per_step", "peak_rss_mb"):
        assert row[key] > 0, key
    assert 0 < row["test_acc"] <= 1
    assert "vs_torch" not in row and "peak_gpu_mb" not in row
    # forward MACs of the 784-100-100-10 MLP, x2 for FLOPs, x3 for a training step less the first
    # layer's input gradient (which nobody computes), x100 images
    macs = [784 * 100, 100 * 100, 100 * 10]
    assert row["flops_per_step"] == 2 * (3 * sum(macs) - macs[0]) * 100


def test_missing_torch_is_reported(tmp_path, monkeypatch):
    """With torch unimportable (a stub that raises shadows it), the driver says so instead of crashing."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import e2e
    finally:
        sys.path.remove(str(SCRIPT.parent))
    (tmp_path / "torch.py").write_text("raise ImportError('no torch here (test stub)')\n")
    monkeypatch.delenv("BACKPROP_BENCH_NO_TORCH", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ok, why, cuda = e2e.torch_status()
    assert ok is False and cuda is False
    assert "not importable" in why and "no torch here" in why


def test_torch_without_a_gpu_gives_cpu_rows_only(tmp_path, monkeypatch):
    """A torch that imports but sees no GPU: a CPU torch row, no torch-cuda row, and no crash."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import e2e
    finally:
        sys.path.remove(str(SCRIPT.parent))
    (tmp_path / "torch.py").write_text("__version__ = '0.0-stub'\n"
                                       "class cuda:\n    is_available = staticmethod(lambda: False)\n")
    monkeypatch.delenv("BACKPROP_BENCH_NO_TORCH", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    assert e2e.torch_status() == (True, "0.0-stub", False)


def test_rounds_merge_into_one_row():
    """Rounds of one implementation: the median over all their windows, the largest peak memory, the
    first round's cold start; an error in any round is the row."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import e2e
    finally:
        sys.path.remove(str(SCRIPT.parent))
    a = {"backend": "numpy", "cold_start_s": 0.5, "images_per_s": 2.0, "window_images_per_s": [1.0, 2.0, 9.0],
         "peak_rss_mb": 100.0}
    b = {**a, "cold_start_s": 0.1, "images_per_s": 4.0, "window_images_per_s": [3.0, 4.0, 5.0], "peak_rss_mb": 120.0}
    row = e2e.merge([a, b])
    assert row["images_per_s"] == 3.5 and row["round_images_per_s"] == [2.0, 4.0]
    assert row["peak_rss_mb"] == 120.0 and row["cold_start_s"] == 0.5
    failed = {"backend": "numpy", "model": "mlp", "error": "boom"}
    assert e2e.merge([a, failed]) == failed


def test_kernel_table_puts_backends_side_by_side(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import kernels_table
    finally:
        sys.path.remove(str(SCRIPT.parent))
    runs = {"benchmarks": [
        {"group": "relu cifar", "extra_info": {"backend": "numba"}, "stats": {"median": 0.001}},
        {"group": "relu cifar", "extra_info": {"backend": "numpy"}, "stats": {"median": 0.004}},
        {"group": "adam_update cifar", "extra_info": {"backend": "numpy"}, "stats": {"median": 0.002}},
    ]}
    path = tmp_path / "k.json"
    path.write_text(json.dumps(runs))
    lines = kernels_table.table(path).splitlines()
    assert lines[0] == "| kernel and shape | numpy ms | numba ms | numba speedup |"
    assert lines[2] == "| adam_update cifar | 2.000 | - | - |"
    assert lines[3] == "| relu cifar | 4.000 | 1.000 | 4.00x |"


def test_missing_pytest_benchmark_is_reported(tmp_path, monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import e2e
    finally:
        sys.path.remove(str(SCRIPT.parent))
    real = e2e.importlib.util.find_spec
    monkeypatch.setattr(e2e.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pytest_benchmark" else real(name, *a))
    assert "pytest-benchmark is not installed" in e2e.kernel_benchmarks(tmp_path / "k.json", quick=True)


def test_matmul_peak_share_is_given_for_cpu_rows_only():
    """The peak is a NumPy matmul on the CPU: a GPU row's share of it would mean nothing."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import e2e
    finally:
        sys.path.remove(str(SCRIPT.parent))
    row = {"model": "mlp", "cold_start_s": 1.0, "images_per_s": 1000.0, "s_per_epoch": 60.0, "gflops": 50.0,
           "peak_rss_mb": 100.0, "test_acc": 0.9}
    md = e2e.table([{**row, "backend": "numba"}, {**row, "backend": "cupy"}, {**row, "backend": "torch-cuda"}],
                   peak=200.0)
    cells = {line.split("|")[2].strip(): line.split("|")[7].strip() for line in md.splitlines()[2:]}
    assert cells == {"numba": "25.0", "cupy": "-", "torch-cuda": "-"}
