"""What ``backprop bench`` shows and writes: terminal and Markdown tables, the JSON, a PNG with error
bars, README's Performance table, and two runs side by side.

Every figure is printed as median (quartiles); cold starts and ratios to PyTorch, measured once a
round, as median (min-max).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backprop.checkpoint import atomic_write

NOTES = ("FLOPs: conv and linear layers only; forward = 2 x MACs, backward = 2 x forward less the first layer's "
         "input gradient, which no implementation computes. % peak: against a 2048x2048 float32 matrix product "
         "measured on the same device. ours/torch: per round, images/s over PyTorch's on the same device (eager; "
         "cupy-graph against torch-cuda-graph).")


def quartiles(s: dict[str, Any] | None, spec: str = ",.0f") -> str:
    """``median (q1-q3)`` of a spread, or "-"."""
    if s is None:
        return "-"
    return f"{format(s['median'], spec)} ({format(s['q1'], spec)}-{format(s['q3'], spec)})"


def extremes(s: dict[str, Any] | None, spec: str = ".2f") -> str:
    """``median (min-max)`` of a spread, or "-"."""
    if s is None:
        return "-"
    return f"{format(s['median'], spec)} ({format(s['min'], spec)}-{format(s['max'], spec)})"


def _table(head: list[str], rows: list[list[str]], names: int = 2) -> str:
    """A Markdown table whose first ``names`` columns are left-aligned and the figures right-aligned."""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * names + "---:|" * (len(head) - names),
                      *("| " + " | ".join(r) + " |" for r in rows)])


def e2e_table(result: dict[str, Any]) -> str:
    """Every end-to-end row: speed, cost, memory, accuracy and the ratio to PyTorch."""
    peaks = result.get("matmul_peak_gflops", {})
    rows = []
    for r in result["e2e"]:
        if "error" in r:
            rows.append([r["model"], r["impl"], f"error: {r['error']}", *["-"] * 9])
            continue
        peak = peaks.get(r["device"])
        share = f"{100 * r['gflops']['median'] / peak['median']:.1f}" if peak else "-"
        gpu = r.get("peak_gpu_mb")
        rows.append([r["model"], r["impl"], quartiles(r["images_per_s"]), quartiles(r["s_per_epoch"], ".1f"),
                     quartiles(r["gflops"], ".1f"), share, extremes(r["cold_start_s"]),
                     f"{r['peak_rss_mb']['max']:.0f}", "-" if gpu is None else f"{gpu['max']:.0f}",
                     f"{100 * r['test_acc']:.1f}%", extremes(r.get("vs_torch"))])
    return _table(["model", "implementation", "images/s", "s/epoch (60k)", "GFLOP/s", "% peak", "cold start s",
                   "peak RSS MB", "peak GPU MB", "test acc", "ours/torch"], rows)


def kernel_table(result: dict[str, Any]) -> str:
    """Milliseconds of every kernel x shape, one column per backend, and speedups over NumPy."""
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in result["kernels"]:
        cells.setdefault((r["kernel"], r["shape"]), {})[r["backend"]] = r["seconds"]
    backends = list(dict.fromkeys(r["backend"] for r in result["kernels"]))
    others = [b for b in backends if b != "numpy"]
    rows = []
    for (kernel, shape), got in cells.items():
        times = [quartiles({k: v * 1e3 for k, v in got[b].items() if k != "n"}, ".3f") if b in got else "-"
                 for b in backends]
        speedups = [f"{got['numpy']['median'] / got[b]['median']:.2f}x" if b in got and "numpy" in got else "-"
                    for b in others]
        rows.append([kernel, shape, *times, *speedups])
    return _table(["kernel", "shape", *(f"{b} ms" for b in backends), *(f"{b} / numpy" for b in others)], rows)


def header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    peaks = ", ".join(f"{device} {quartiles(p, '.1f')}" for device, p in result.get("matmul_peak_gflops", {}).items())
    lines = [f"backprop {result['version']} on {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, NumPy "
             f"{m['numpy']}, {result['date']}{' (--quick)' if result['quick'] else ''}; {result['seconds']:.0f} s"]
    if peaks:
        lines.append(f"matmul peak GFLOP/s: {peaks}")
    return [*lines, *result["notes"]]


def markdown(result: dict[str, Any]) -> str:
    """The whole run as Markdown: what, where, both tables and how to read them."""
    parts = ["\n".join(f"- {line}" for line in header(result))]
    if result.get("e2e"):
        s = result["settings"]
        parts += [f"End to end: batch 100, float32, Adam lr 1e-3, the embedded MNIST subset; test accuracy after "
                  f"one epoch over {s['train_images']:,} images; {s['rounds']} rounds of {s['windows']} windows of "
                  f"~{s['window_seconds']} s. Figures: median (quartiles); cold start and ours/torch: median "
                  "(min-max) over rounds.", e2e_table(result), NOTES]
    if result.get("kernels"):
        parts += ["Kernels, ms per call: median (quartiles) over rounds, the device synchronized inside the timing.",
                  kernel_table(result)]
    return "\n\n".join(parts) + "\n"


def readme_table(result: dict[str, Any]) -> str:
    """README's Performance table: a few columns of the end-to-end rows."""
    rows = [[r["model"], r["impl"], quartiles(r["images_per_s"]), f"{r['s_per_epoch']['median']:.1f}",
             f"{100 * r['test_acc']:.1f}%", extremes(r.get("vs_torch"))]
            for r in result["e2e"] if "error" not in r]
    s = result["settings"]
    return _table(["model", "implementation", "images/s: median (quartiles)", "s/epoch (60k)",
                   f"test acc (1 epoch, {s['train_images'] // 1000}k images)", "ours/torch: median (min-max)"], rows)


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Two runs side by side (two machines, two commits): their figures and B over A."""
    def ratio(x: float | None, y: float | None) -> str:
        return f"{y / x:.2f}" if x and y else "-"

    lines = [f"A: {' '.join(header(a)[:1])}", f"B: {' '.join(header(b)[:1])}", ""]
    e2e = {(r["model"], r["impl"]): r for r in a.get("e2e", []) if "error" not in r}
    rows = []
    for r in b.get("e2e", []):
        old = e2e.get((r["model"], r["impl"]))
        if old is not None and "error" not in r:
            rows.append([r["model"], r["impl"], quartiles(old["images_per_s"]), quartiles(r["images_per_s"]),
                         ratio(old["images_per_s"]["median"], r["images_per_s"]["median"])])
    if rows:
        lines += [_table(["model", "implementation", "A images/s", "B images/s", "B / A"], rows), ""]
    kernels = {(r["kernel"], r["shape"], r["backend"]): r["seconds"] for r in a.get("kernels", [])}
    rows = [[r["kernel"], r["shape"], r["backend"], f"{kernels[key]['median'] * 1e3:.3f}",
             f"{r['seconds']['median'] * 1e3:.3f}", ratio(kernels[key]["median"], r["seconds"]["median"])]
            for r in b.get("kernels", []) if (key := (r["kernel"], r["shape"], r["backend"])) in kernels]
    if rows:
        lines += [_table(["kernel", "shape", "backend", "A ms", "B ms", "B / A (time)"], rows, names=3)]
    if len(lines) == 3:
        lines.append("the two runs have no figure in common")
    return "\n".join(lines)


def read_result(path: str | Path) -> dict[str, Any]:
    """A run's JSON, refused with one line if it is not one (bounded: a run's JSON is small)."""
    path = Path(path)
    if path.stat().st_size > 50 * 2**20:
        raise ValueError(f"{path}: larger than 50 MB, not a backprop bench JSON")
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(result, dict) or "machine" not in result or not ({"e2e", "kernels"} & result.keys()):
        raise ValueError(f"{path}: not the JSON of a backprop bench run")
    return result


def plot(result: dict[str, Any], path: Path) -> Path:
    """images/s of every end-to-end row, one panel per model, with quartile error bars; below, the kernels
    at the first shape, ms per call on a log scale. Raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in result.get("e2e", []) if "error" not in r]
    models = list(dict.fromkeys(r["model"] for r in ok))
    kernels = result.get("kernels", [])
    rows = bool(models) + bool(kernels)
    fig = plt.figure(figsize=(max(8, 3 * len(models) + 1), 4.5 * rows))
    impls = list(dict.fromkeys(r["impl"] for r in ok))
    colors = {b: f"C{i}" for i, b in enumerate(dict.fromkeys([*impls, *(r["backend"] for r in kernels)]))}
    for i, model in enumerate(models):
        ax = fig.add_subplot(rows, len(models), i + 1)
        mine = [r for r in ok if r["model"] == model]
        s = [r["images_per_s"] for r in mine]
        ax.bar([r["impl"] for r in mine], [v["median"] for v in s], color=[colors[r["impl"]] for r in mine],
               yerr=[[v["median"] - v["q1"] for v in s], [v["q3"] - v["median"] for v in s]], capsize=3)
        ax.set_title(model, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        if i == 0:
            ax.set_ylabel("training images/s (batch 100)")
    if kernels:
        shape = kernels[0]["shape"]
        ax = fig.add_subplot(rows, 1, rows)
        backends = list(dict.fromkeys(r["backend"] for r in kernels))
        names = list(dict.fromkeys(r["kernel"] for r in kernels))
        width = 0.8 / len(backends)
        for j, b in enumerate(backends):
            got = {r["kernel"]: r["seconds"] for r in kernels if r["backend"] == b and r["shape"] == shape}
            xs = [k + j * width for k, name in enumerate(names) if name in got]
            s = [got[name] for name in names if name in got]
            ax.bar(xs, [v["median"] * 1e3 for v in s], width, label=b, color=colors[b],
                   yerr=[[(v["median"] - v["q1"]) * 1e3 for v in s], [(v["q3"] - v["median"]) * 1e3 for v in s]])
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names, rotation=60, ha="right", fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel(f"ms per call, {shape} shape")
        ax.legend(fontsize=8)
    fig.suptitle(header(result)[0], fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return path


def write_text(path: str | Path, text: str) -> str:
    """``text`` written to ``path`` atomically (UTF-8); the path."""
    return str(atomic_write(path, lambda f: f.write(text.encode())))


def write(result: dict[str, Any], folder: Path, stem: str) -> list[str]:
    """The JSON, the Markdown and (with matplotlib) the PNG, each written atomically; what was written,
    or why the PNG was not."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [write_text(folder / f"{stem}.json", json.dumps(result, indent=1) + "\n"),
               write_text(folder / f"{stem}.md", markdown(result))]
    try:
        written.append(str(plot(result, folder / f"{stem}.png")))
    except ImportError:
        written.append("no PNG: matplotlib is not installed (the package's [plot] extra installs it)")
    return written
