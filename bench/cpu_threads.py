"""Numba and NumPy against PyTorch CPU as the thread count grows: ``backprop bench``'s end-to-end
SimpleConvNet run once per thread count, each in a process whose pools (BLAS, OpenMP, Numba, PyTorch)
get that many threads, then one table of images/s and ratios to PyTorch at the same count:

    python bench/cpu_threads.py --threads 1,4,8,16 --out DIR    # DIR/cpu-threads.md, and a JSON per count

Laptops and workstations have more than the 2 cores the serial Numba kernels were tuned on: this
says whether the cores go to waste there (the GPU job runs it on its machine's 16).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from backprop.bench import report

POOLS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def run(threads: int, out: Path, extra: list[str]) -> Path:
    """One ``backprop bench`` end-to-end run with every pool at ``threads``; returns its JSON."""
    folder = out / f"threads-{threads}"
    env = {**os.environ, **dict.fromkeys(POOLS, str(threads))}
    subprocess.run([sys.executable, "-m", "backprop", "bench", "--only", "e2e", "--models", "simpleconvnet",
                    "--out", str(folder), *extra], env=env, check=True)
    return next(folder.glob("*.json"))


def table(results: dict[int, dict]) -> str:
    lines = ["| threads | implementation | images/s, median (quartiles) | / PyTorch CPU |", "|---:|---|---:|---:|"]
    for threads, result in results.items():
        for row in result["e2e"]:
            ratio = report.extremes(row.get("vs_torch")) if row.get("vs_torch") else "-"
            lines.append(f"| {threads} | {row['impl']} | {report.quartiles(row['images_per_s'])} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,4,8,16", help="comma-separated thread counts (default 1,4,8,16)")
    p.add_argument("--out", type=Path, required=True, help="folder for the table and the runs")
    args, extra = p.parse_known_args(argv)  # anything else goes to backprop bench (--rounds, --backends, ...)
    results: dict[int, dict] = {}
    title = "SimpleConvNet, batch 100, float32 (`backprop bench`)"
    for t in (int(t) for t in args.threads.split(",")):  # the table rewritten after each count: a run cut
        results[t] = report.read_result(run(t, args.out, extra))  # short keeps what it measured
        text = table(results)
        report.write_text(args.out / "cpu-threads.md", f"{title}\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
