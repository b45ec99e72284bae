"""README's Python snippets run as written, and the zoo functions it names exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import backprop as bp

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(code, tmp_path, monkeypatch, capsys):
    """Each snippet runs in a fresh namespace (in order, since later ones use earlier names), in a
    scratch folder, with the progress bar's output swallowed."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for earlier in SNIPPETS[:SNIPPETS.index(code)]:
        exec(compile(earlier, "README.md", "exec"), namespace)
    exec(compile(code, "README.md", "exec"), namespace)
    capsys.readouterr()


def test_the_zoo_functions_readme_names_exist():
    named = re.findall(r"bp\.zoo\.(\w+)\(", README.read_text(encoding="utf-8"))
    assert named and all(hasattr(bp.zoo, name) for name in named), named
