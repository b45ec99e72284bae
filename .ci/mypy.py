"""mypy over backprop/, backends/ and kernels/ under the names they install as.

    python .ci/mypy.py [MYPY OPTIONS]

The three folders form one package through [tool.setuptools.package-dir] (backends/ is
backprop.backends, kernels/ is backprop.kernels). mypy cannot follow that mapping: an editable
install reaches it through an import hook mypy does not run, and mypy never reports errors in
installed packages. So this lays the package out as it installs, in a temporary folder of symlinks
to the sources, runs ``mypy -p backprop`` on it with the [tool.mypy] settings of pyproject.toml, and
prints the errors with the paths of the sources (backends/base.py, not .../backprop/backends/base.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: mypy itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def package_dirs() -> dict[str, str]:
    """{"backprop": "backprop", "backprop.backends": "backends", ...} from pyproject.toml."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-dir"]


def lay_out(dest: Path, dirs: dict[str, str]) -> dict[str, str]:
    """Symlinks under ``dest`` that make every package of ``dirs`` importable by its name; returns
    {prefix in dest: prefix in the repository} for the paths mypy prints, longest first."""
    mapped = {(dest / name.replace(".", "/")): ROOT / folder for name, folder in dirs.items()}
    for target in sorted(mapped, key=lambda p: len(p.parts)):
        target.mkdir(parents=True, exist_ok=True)
        for entry in mapped[target].iterdir():
            if not (target / entry.name).exists() and entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    prefixes = {f"{target}{os.sep}": f"{folder.relative_to(ROOT)}{os.sep}" for target, folder in mapped.items()}
    return dict(sorted(prefixes.items(), key=lambda kv: -len(kv[0])))


def main() -> int:
    dirs = package_dirs()
    with tempfile.TemporaryDirectory(prefix="backprop-mypy-") as tmp:
        prefixes = lay_out(Path(tmp), dirs)
        tops = sorted({name.split(".")[0] for name in dirs})
        cmd = [sys.executable, "-m", "mypy", *(a for top in tops for a in ("-p", top)), *sys.argv[1:]]
        env = {**os.environ, "MYPYPATH": tmp}
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for stream, text in ((sys.stdout, done.stdout), (sys.stderr, done.stderr)):
        for line in text.splitlines(keepends=True):
            for inside, source in prefixes.items():
                if line.startswith(inside):
                    line = source + line[len(inside):]
                    break
            stream.write(line)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
