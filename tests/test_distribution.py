"""The distribution's name is ours (``backprop`` on PyPI is another project's) and every install hint
names it: the name is written once, in backends/install.py, and pyproject.toml and README agree."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import backprop
from backprop.backends.install import DISTRIBUTION, pip_install

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("backprop", "backends", "kernels", "bench") for p in (ROOT / folder).rglob("*.py")]


def test_pyproject_names_the_distribution_and_keeps_the_command():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\n(.*?)^\[", text, re.M | re.S).group(1)
    assert re.search(r'^name = "([^"]+)"$', project, re.M).group(1) == DISTRIBUTION
    assert re.search(r'^backprop = "backprop\.cli:main"$', text, re.M)


def test_installed_under_the_name():
    assert importlib.metadata.version(DISTRIBUTION) == backprop.__version__


def test_hints_name_the_distribution():
    assert pip_install("plot") == f"pip install '{DISTRIBUTION}[plot]'"
    assert pip_install("cuda12", "cuda13") == f"pip install '{DISTRIBUTION}[cuda12]' or '{DISTRIBUTION}[cuda13]'"


def test_the_name_is_written_once():
    """No module writes the name or an extra of the old one itself: each hint comes from pip_install."""
    holders = [p.relative_to(ROOT).as_posix() for p in SOURCES if DISTRIBUTION in p.read_text(encoding="utf-8")]
    assert holders == ["backends/install.py"]
    old = [p.relative_to(ROOT).as_posix() for p in SOURCES if "backprop[" in p.read_text(encoding="utf-8")]
    assert old == []


def test_readme_names_the_distribution():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{DISTRIBUTION}`" in readme and "'backprop[" not in readme
    assert f"{pip_install('plot')}" in readme
