"""bench/data_parallel.py: the ring formula, and one quick run of 1 rank x 2 threads against 2 ranks x 1
thread that prints both tables and writes its measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_distributed import MPIEXEC, needs_mpi

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import data_parallel  # noqa: E402  (bench/ is not a package)


def test_ring_allreduce_time():
    transfer, total = data_parallel.ring_seconds(1_000_000, 4, 1e9, 1e-6)
    assert transfer == pytest.approx(2 * 3 / 4 * 1e-3)
    assert total == pytest.approx(transfer + 6e-6)
    assert data_parallel.ring_seconds(1_000_000, 1, 1e9, 1e-6) == (0.0, 0.0)


@needs_mpi
def test_quick_run_prints_both_tables(tmp_path):
    assert MPIEXEC is not None
    out = tmp_path / "dp.json"
    r = subprocess.run([sys.executable, str(BENCH / "data_parallel.py"), "--quick", "--images", "200",
                        "--backends", "numpy", "--models", "lenet5", "--cores", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| lenet5 | numpy | 1 x 2 |" in r.stdout and "| lenet5 | numpy | 2 x 1 |" in r.stdout
    assert "| lenet5 | numpy (" in r.stdout and "100 Gb/s Ethernet" in r.stdout
    rows = {row["ranks"]: row for row in json.loads(out.read_text())}
    assert rows[2]["bytes"] == rows[1]["bytes"] == 61_706 * 4
    assert rows[2]["allreduce_in_step_s"] > 0 and rows[2]["allreduce_alone_s"] > 0
    assert rows[1]["allreduce_alone_s"] is None and all(v > 0 for v in rows[2]["images_per_s"])
