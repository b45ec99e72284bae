"""bench/ab_kernels.py loads the Numba kernels of a git revision and times them against the working tree's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from backprop.backends import available_backends

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "ab_kernels.py"


def _git_head() -> bool:
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


def test_ab_kernels_names_a_revision_it_cannot_read():
    r = subprocess.run([sys.executable, str(SCRIPT), "--base", "no-such-revision-xyz"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "cannot read kernels/numba_cpu.py at 'no-such-revision-xyz'" in r.stderr
