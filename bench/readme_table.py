"""README's Performance table, regenerated from a committed ``backprop bench`` JSON (never copied by hand):

    python bench/readme_table.py bench/results/DATE-MACHINE.json          # rewrite README.md's table
    python bench/readme_table.py bench/results/DATE-MACHINE.json --check  # exit 1 if README differs

The table goes between README's ``<!-- bench:table -->`` and ``<!-- bench:end -->`` lines, after one line
naming the JSON, the machine and the date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backprop.bench.report import read_result, readme_table, write_text

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench:table -->", "<!-- bench:end -->"


def section(json_path: Path) -> str:
    """What goes between the markers: the source line and the table."""
    result = read_result(json_path)
    m = result["machine"]
    try:
        source = json_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        source = json_path.as_posix()
    torch = next((r["torch_version"] for r in result["e2e"] if "torch_version" in r), None)
    return (f"{m['cpus']} CPUs ({m['processor']}), {result['date'][:10]}, backprop {result['version']}"
            f"{f', PyTorch {torch}' if torch else ''} (`{source}`):\n\n{readme_table(result)}\n")


def replaced(readme: str, body: str) -> str:
    """``readme`` with ``body`` between the markers (each on a line of its own, once)."""
    lines = readme.split("\n")
    if lines.count(BEGIN) != 1 or lines.count(END) != 1 or lines.index(BEGIN) > lines.index(END):
        raise ValueError(f"README needs one {BEGIN} line followed by one {END} line")
    head, tail = lines[:lines.index(BEGIN) + 1], lines[lines.index(END):]
    return "\n".join([*head, body.rstrip("\n"), *tail])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a backprop bench JSON (a full run, committed under bench/results/)")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if README's table differs")
    args = p.parse_args(argv)
    readme = args.readme.read_text()
    new = replaced(readme, section(args.json))
    if args.check:
        if new != readme:
            print(f"{args.readme}: the Performance table differs from {args.json}: run python bench/readme_table.py "
                  f"{args.json}", file=sys.stderr)
            return 1
        return 0
    if new != readme:
        write_text(args.readme, new)
        print(f"{args.readme}: Performance table rewritten from {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
