"""Dependencies point one way: kernels <- backends <- backprop.

Every module under kernels/ (backprop.kernels) and backends/ (backprop.backends) is parsed, and each
import it makes (at the top, inside functions, and ``importlib.import_module`` of a literal name) must
stay within the layers below it: kernels import nothing of backprop outside backprop.kernels, backends
nothing outside backprop.backends and backprop.kernels. backprop/ may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder -> (the package it installs as, the backprop packages its modules may import)
LAYERS = {
    "kernels": ("backprop.kernels", ("backprop.kernels",)),
    "backends": ("backprop.backends", ("backprop.backends", "backprop.kernels")),
    "backprop": ("backprop", ("backprop",)),
}


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the source of ``module``: import
    statements anywhere (functions and classes too), relative ones resolved, ``from X import y`` as
    X.y when y may be a submodule, and importlib.import_module / __import__ of a literal name (or of an
    f-string's literal head)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            # `from backprop import kernels` imports backprop.kernels; `from backprop import Sequential`
            # takes a name of backprop itself: keep both readings, the checker allows either
            found += [(node.lineno, f"{base}.{alias.name}|{base}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                found.append((node.lineno, str(arg.values[0].value).rstrip(".")))
    return found


def violations(source: str, module: str, allowed: tuple[str, ...], is_package: bool = False) -> list[str]:
    """The imports of ``source`` (module ``module``) that reach into backprop outside ``allowed``."""
    bad = []
    for line, names in imported_names(source, module, is_package):
        candidates = names.split("|")
        if not _within(candidates[-1], ("backprop",)):
            continue  # the standard library, numpy, numba, ...
        if not any(_within(name, allowed) for name in candidates):
            bad.append(f"{module}:{line} imports {candidates[0]}")
    return bad


def modules(folder: str):
    package, allowed = LAYERS[folder]
    for path in sorted((ROOT / folder).rglob("*.py")):
        parts = path.relative_to(ROOT / folder).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join([package, *(parts[:-1] if is_package else parts)])
        yield pytest.param(path, name, allowed, is_package, id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize(("path", "module", "allowed", "is_package"), [*modules("kernels"), *modules("backends")])
def test_imports_point_down(path, module, allowed, is_package):
    assert violations(path.read_text(encoding="utf-8"), module, allowed, is_package) == []


def test_every_layer_is_scanned():
    scanned = {folder: list(modules(folder)) for folder in LAYERS}
    assert all(scanned.values()), "a source folder has no modules: has the layout changed?"
    # backprop/ may import anything, but it parses (and is counted) like the others
    for param in scanned["backprop"]:
        path, module, _, is_package = param.values
        imported_names(path.read_text(encoding="utf-8"), module, is_package)


KERNELS = LAYERS["kernels"][1]
BACKENDS = LAYERS["backends"][1]


# (source, its module, what it may import, how many wrong-way imports it makes)
CASES = [
    ("from backprop.backends import Backend", "backprop.kernels.reference", KERNELS, 1),
    ("import backprop.backends.base", "backprop.kernels.reference", KERNELS, 1),
    ("from backprop import Sequential", "backprop.kernels.reference", KERNELS, 1),
    ("def f():\n    from backprop.layers import Linear\n", "backprop.kernels.cuda", KERNELS, 1),
    ("class C:\n    def f(self):\n        import backprop.model\n", "backprop.backends.base", BACKENDS, 1),
    ("from ..backends import base", "backprop.kernels.reference", KERNELS, 1),
    ("from .. import model", "backprop.backends.base", BACKENDS, 1),
    ("import importlib\nm = importlib.import_module('backprop.training')", "backprop.backends.registry", BACKENDS, 1),
    ("import importlib\nm = importlib.import_module(f'backprop.layers.{n}')", "backprop.backends.registry",
     BACKENDS, 1),
    ("from backprop.model import Sequential", "backprop.backends", BACKENDS, 1),
    ("import numpy as np\nfrom numba import njit", "backprop.kernels.numba_cpu", KERNELS, 0),
    ("from backprop.kernels.reference import conv_output_size", "backprop.kernels.cuda", KERNELS, 0),
    ("from backprop import kernels", "backprop.kernels.cuda", KERNELS, 0),
    ("from . import reference", "backprop.kernels.cuda", KERNELS, 0),
    ("from backprop.kernels import reference as ref", "backprop.backends.base", BACKENDS, 0),
    ("from .base import Backend", "backprop.backends.registry", BACKENDS, 0),
    ("def f():\n    import importlib\n    return importlib.import_module(f'backprop.backends.{n}')",
     "backprop.backends.registry", BACKENDS, 0),
    ("from backprop.backends.base import Backend", "backprop.backends", BACKENDS, 0),
]


@pytest.mark.parametrize(("source", "module", "allowed", "expected"), CASES)
def test_the_checker_catches_wrong_way_imports_only(source, module, allowed, expected):
    assert len(violations(source, module, allowed, is_package=module == "backprop.backends")) == expected
