"""pytest's output sums skips up by reason (tests/skip_summary.py), with pyproject's own settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SKIPPING = '''
import pytest

@pytest.mark.parametrize("i", range(3))
def test_gpu(i):
    pytest.skip("no GPU here")

@pytest.mark.skipif(True, reason="no MPI here")
def test_mpi():
    pass

def test_runs():
    assert True
'''


def test_skips_are_summed_up_by_reason(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
                          str(tmp_path), "-p", "skip_summary", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120).stdout
    assert "1 passed, 4 skipped" in out, out
    assert "4 skipped, by reason" in out and "    3  no GPU here\n    1  no MPI here\n" in out, out
    assert "SKIPPED [" not in out, out  # no line per skipping test
