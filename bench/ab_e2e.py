"""Does the working tree train end to end as fast as another revision? ``backprop bench``'s end-to-end job
(``python -m backprop.bench.e2e``: cold start, an accuracy epoch, timed windows) runs from both trees,
taking turns round by round (the order alternates), so this machine's drift hits both alike; each
round's ratio is the working tree's images/s over the revision's:

    python bench/ab_e2e.py --base HEAD~3 --backends numba,numpy --models simpleconvnet,lenet5,mlp --rounds 5

The revision is checked out into a temporary git worktree; it must have ``backprop/bench/`` (the
revisions that have ``backprop bench``). Each side is imported from its own tree, through a temporary
package of links laid out as installed (``backends/`` and ``kernels/`` inside ``backprop/``), whatever
is installed in the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from backprop.bench.e2e import MARK, Job
from backprop.bench.report import quartiles
from backprop.bench.stats import spread
from backprop.checks import int_arg

ROOT = Path(__file__).resolve().parents[1]


def importable(tree: Path, folder: Path) -> Path:
    """``folder``, made a place to import ``tree``'s backprop from, laid out as installed: a package of
    links to ``tree/backprop``'s entries, with ``backends/`` and ``kernels/`` linked in."""
    package = folder / "backprop"
    package.mkdir(parents=True)
    for entry in (tree / "backprop").iterdir():
        (package / entry.name).symlink_to(entry)
    for sub in ("backends", "kernels"):
        (package / sub).symlink_to(tree / sub, target_is_directory=True)
    return folder


def checkout(revision: str, folder: Path) -> Path:
    """``revision`` as a git worktree in ``folder``."""
    r = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), revision],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cannot check out {revision!r}: {r.stderr.strip()}")
    return folder


def child(tree: Path, path: Path, backend: str, model: str, args: argparse.Namespace) -> float:
    """Median images/s of one end-to-end job run from ``tree``, importing backprop from ``path``."""
    if not (tree / "backprop" / "bench" / "e2e.py").is_file():
        sys.exit(f"{tree} has no backprop/bench/e2e.py: compare with a revision that has `backprop bench`")
    job = Job(backend, model, args.train_images, args.windows, args.window_seconds)
    env = {**os.environ, "PYTHONPATH": str(path)}
    # run from the folder of links: `-m` puts the working folder first on sys.path, and a tree's own
    # backprop/ lacks backends/ and kernels/, which the editable install would then take from elsewhere
    r = subprocess.run([sys.executable, "-m", "backprop.bench.e2e", json.dumps(vars(job))], capture_output=True,
                       text=True, env=env, cwd=path)
    lines = [line for line in r.stdout.splitlines() if line.startswith(MARK)]
    if r.returncode != 0 or not lines:
        sys.exit(f"{tree} {backend} {model} failed:\n{r.stdout}\n{r.stderr}")
    return spread(json.loads(lines[-1][len(MARK):])["window_images_per_s"])["median"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--backends", default="numba,numpy")
    p.add_argument("--models", default="simpleconvnet,lenet5,mlp")
    positive = int_arg(1, "a positive integer")
    p.add_argument("--rounds", type=positive, default=5)
    p.add_argument("--windows", type=positive, default=3)
    p.add_argument("--window-seconds", type=float, default=0.5)
    p.add_argument("--train-images", type=int_arg(100, "an integer >= 100"), default=1000)
    args = p.parse_args(argv)
    configs = [(b, m) for m in args.models.split(",") for b in args.backends.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = checkout(args.base, Path(tmp) / "base")
        try:
            trees = {"tree": (ROOT, importable(ROOT, Path(tmp) / "tree-path")),
                     "base": (base, importable(base, Path(tmp) / "base-path"))}
            rates: dict[tuple[str, str], dict[str, list[float]]] = {c: {"tree": [], "base": []} for c in configs}
            for r in range(args.rounds):
                for backend, model in configs:
                    for side in (("tree", "base") if r % 2 == 0 else ("base", "tree")):
                        rates[backend, model][side].append(child(*trees[side], backend, model, args))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    print(f"e2e, batch 100, Adam, float32; {args.rounds} rounds of {args.windows} windows of ~{args.window_seconds} s; "
          f"working tree against {args.base}\n")
    print("| model | backend | tree images/s | base images/s | tree / base per round: median (quartiles) |")
    print("|---|---|---:|---:|---:|")
    for (backend, model), got in rates.items():
        ratios = [t / b for t, b in zip(got["tree"], got["base"], strict=True)]
        print(f"| {model} | {backend} | {quartiles(spread(got['tree']))} | {quartiles(spread(got['base']))} "
              f"| {quartiles(spread(ratios), '.3f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
