"""bench/ab_kernels.py loads the Numba kernels of a git revision and times them against the working tree's;
bench/ab_e2e.py runs backprop bench's end-to-end job from both trees."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from backprop.backends import available_backends

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "ab_kernels.py"


def bench_script(name: str):
    """bench/NAME.py imported as a module (the scripts import each other by name, from bench/)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))


def _git_head() -> bool:
    if shutil.which("git") is None:
        return False
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "HEAD"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(available_backends()["numba"] is not None, reason="needs the numba backend")
@pytest.mark.skipif(not _git_head(), reason="needs the project's git history")
def test_ab_kernels_against_head_reports_both_sides_and_their_ratio():
    r = subprocess.run([sys.executable, str(SCRIPT), "--base", "HEAD", "--model", "mlp", "--steps", "1",
                        "--rounds", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^\| working tree \| [\d,]+ \|$", r.stdout, re.M), r.stdout
    assert re.search(r"^\| HEAD \| [\d,]+ \|$", r.stdout, re.M), r.stdout
    median = float(re.search(r"round by round: median \(quartiles\) ([\d.]+)", r.stdout).group(1))
    assert median > 0


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_ab_kernels_names_a_revision_it_cannot_read():
    r = subprocess.run([sys.executable, str(SCRIPT), "--base", "no-such-revision-xyz"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "cannot read kernels/numba_cpu.py at 'no-such-revision-xyz'" in r.stderr


@pytest.mark.skipif(available_backends()["numba"] is not None, reason="needs the numba backend")
def test_interleave_runs_each_variant_on_its_own_kernels():
    """Each side's blocks must call that side's kernels: count the calls of a wrapped copy of the module."""
    ab_kernels = bench_script("ab_kernels")
    from backprop import get_backend
    from backprop.kernels import numba_cpu

    calls = []
    counting = types.ModuleType("numba_cpu_counting")
    counting.__dict__.update(vars(numba_cpu))

    def add_bias_relu(*args):
        calls.append(1)
        return numba_cpu.add_bias_relu(*args)
    counting.add_bias_relu = add_bias_relu
    shared = get_backend("numba")
    from backprop.backends.numba_backend import NumbaBackend
    variants = {"shipped": NumbaBackend(), "counting": NumbaBackend(kernels=counting)}
    rates = ab_kernels.interleave(variants, "mlp", steps=2, rounds=3)
    assert shared.k is numba_cpu  # the shared backend is left alone
    assert [len(r) for r in rates.values()] == [3, 3] and all(v > 0 for r in rates.values() for v in r)
    # warm-up 5 steps + 3 rounds of 2, two Linear layers with their ReLU a step
    assert len(calls) == 2 * (5 + 3 * 2)


@pytest.mark.skipif(not _git_head(), reason="needs the project's git history")
def test_ab_e2e_against_head_reports_a_ratio():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "ab_e2e.py"), "--base", "HEAD", "--backends", "numpy",
                        "--models", "mlp", "--rounds", "1", "--windows", "1", "--window-seconds", "0.001",
                        "--train-images", "100"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    row = re.search(r"^\| mlp \| numpy \| [\d,]+ \(.*\) \| [\d,]+ \(.*\) \| ([\d.]+) \(", r.stdout, re.M)
    assert row and float(row.group(1)) > 0, r.stdout


@pytest.mark.skipif(available_backends()["numba"] is not None, reason="needs the numba backend")
def test_numba_threading_compiles_the_shipped_kernels_in_parallel_without_touching_them():
    numba_threading = bench_script("numba_threading")
    import numpy as np

    from backprop.kernels import numba_cpu
    parallel = numba_threading.parallel_kernels()
    assert parallel.relu is not numba_cpu.relu and parallel.relu.targetoptions["parallel"] is True
    assert parallel.relu.py_func is numba_cpu.relu.py_func  # the same source, compiled again
    assert "parallel" not in numba_cpu.relu.targetoptions
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    serial_out, parallel_out = np.empty_like(x), np.empty_like(x)
    numba_cpu.relu(x, serial_out)
    parallel.relu(x, parallel_out)
    np.testing.assert_array_equal(serial_out, parallel_out)
