"""The kernel micro-benchmarks of one pytest-benchmark JSON file as a Markdown table: one row per kernel
and shape, one column per backend (median time), and each backend's speedup over the NumPy reference.

    python bench/kernels_table.py bench/results/kernels.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def table(path: Path) -> str:
    runs = json.loads(path.read_text())
    medians: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in runs["benchmarks"]:
        medians[bench["group"]][bench["extra_info"]["backend"]] = bench["stats"]["median"]
    backends = sorted({b for row in medians.values() for b in row}, key=lambda b: (b != "numpy", b))
    others = [b for b in backends if b != "numpy"]
    head = ["kernel and shape", *(f"{b} ms" for b in backends), *(f"{b} speedup" for b in others)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for group in sorted(medians):
        row = medians[group]
        times = [f"{row[b] * 1e3:.3f}" if b in row else "-" for b in backends]
        ratios = [f"{row['numpy'] / row[b]:.2f}x" if b in row and "numpy" in row else "-" for b in others]
        lines.append(f"| {group} | " + " | ".join(times + ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(table(Path(sys.argv[1])))
