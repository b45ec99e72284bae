"""Does the working tree train end to end as fast as another revision? ``bench/e2e.py``'s one-configuration
child (cold start, an accuracy epoch, timed windows) runs from both trees, taking turns round by round
(the order alternates), so this machine's drift hits both alike; each round's ratio is the working
tree's images/s over the revision's:

    python bench/ab_e2e.py --base HEAD~3 --backends numba,numpy --models simpleconvnet,lenet5,mlp --rounds 5

The revision is checked out into a temporary git worktree and imported from there (its ``backends/``
and ``kernels/`` folders linked into its ``backprop/`` package, as the installed layout maps them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "E2E-JSON "  # bench/e2e.py's child prefixes its one JSON line with this


def checkout(revision: str, folder: Path) -> Path:
    """``revision`` as an importable tree in ``folder``."""
    r = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), revision],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"cannot check out {revision!r}: {r.stderr.strip()}")
    for sub in ("backends", "kernels"):
        (folder / "backprop" / sub).symlink_to(folder / sub, target_is_directory=True)
    return folder


def child(tree: Path, backend: str, model: str, args: argparse.Namespace) -> float:
    """images/s of one e2e child run from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "BACKPROP_BENCH_NO_TORCH": "1"}
    cmd = [sys.executable, str(tree / "bench" / "e2e.py"), "--one", backend, model, "--steps", str(args.steps),
           "--windows", str(args.windows), "--train-images", str(args.train_images)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    lines = [line for line in r.stdout.splitlines() if line.startswith(MARK)]
    if r.returncode != 0 or not lines:
        sys.exit(f"{tree} {backend} {model} failed:\n{r.stdout}\n{r.stderr}")
    return float(json.loads(lines[-1][len(MARK):])["images_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--backends", default="numba,numpy")
    p.add_argument("--models", default="simpleconvnet,lenet5,mlp")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--train-images", type=int, default=1000)
    args = p.parse_args(argv)
    configs = [(b, m) for m in args.models.split(",") for b in args.backends.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        base = checkout(args.base, Path(tmp) / "base")
        try:
            rates: dict[tuple[str, str], dict[str, list[float]]] = {c: {"tree": [], "base": []} for c in configs}
            for r in range(args.rounds):
                for backend, model in configs:
                    for side in (("tree", "base") if r % 2 == 0 else ("base", "tree")):
                        tree = ROOT if side == "tree" else base
                        rates[backend, model][side].append(child(tree, backend, model, args))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    print(f"e2e, batch 100, Adam, float32; {args.rounds} rounds of {args.windows} windows x {args.steps} steps; "
          f"working tree against {args.base}\n")
    print("| model | backend | tree images/s | base images/s | tree / base per round: median (range) |")
    print("|---|---|---:|---:|---:|")
    for (backend, model), got in rates.items():
        ratios = [t / b for t, b in zip(got["tree"], got["base"], strict=True)]
        print(f"| {model} | {backend} | {statistics.median(got['tree']):,.0f} | {statistics.median(got['base']):,.0f} "
              f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
