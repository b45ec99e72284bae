"""``backprop bench``: kernel micro-benchmarks and end-to-end training, written to a folder of the user's.

PyTorch rows are added when torch imports (asked of a subprocess, so this process never loads it): on
the CPU always, and on CUDA eager and with CUDA graphs where torch sees a GPU. Without torch, the run
says why in one line and goes on without those rows.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backprop.backends import available_backends, get_backend
from backprop.bench import report
from backprop.bench.e2e import Settings, run_e2e
from backprop.bench.kernels import time_kernels
from backprop.bench.stats import machine, machine_id, matmul_peak

DEFAULT_OUT = Path("backprop-bench")


@dataclass
class Plan:
    """What to measure and how long: ``full()`` (about 10 minutes on 2 cores) or ``quick()`` (under one)."""

    e2e: Settings
    kernels: bool = True
    e2e_on: bool = True
    kernel_rounds: int = 5
    kernel_seconds: float = 0.02  # a timed sample: calls repeated for at least this long
    quick: bool = False

    @classmethod
    def full(cls) -> Plan:
        return cls(Settings())

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(Settings(models=("simpleconvnet", "mlp"), rounds=1, windows=3, window_seconds=0.2,
                            train_images=1000), kernel_rounds=3, kernel_seconds=0.002, quick=True)


def torch_status() -> tuple[str | None, bool, str]:
    """(version or None, CUDA usable, why not) of the torch this interpreter would import."""
    r = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__, torch.cuda.is_available())"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["import failed"])[-1]
        return None, False, f"torch is not importable ({last})"
    version, cuda = r.stdout.split()[-2:]
    return version, cuda == "True", ""


def check_out(out: Path) -> Path:
    """``out``, refused if it lies inside the installed package (results belong to the user)."""
    import backprop
    import backprop.backends
    import backprop.kernels
    target = out.resolve()
    for package in (backprop, backprop.backends, backprop.kernels):
        folder = Path(package.__file__ or "").resolve().parent
        if target == folder or folder in target.parents:
            raise ValueError(f"{out} is inside the installed package ({folder}): choose another folder")
    return out


def usable_backends(names: Sequence[str] | None, say: Callable[[str], None]) -> list[str]:
    """The backends asked for (default: all), less those that cannot run here, each said in one line."""
    known = available_backends()
    asked = list(names) if names else list(known)
    for name in asked:
        if name not in known:
            raise ValueError(f"unknown backend {name!r}: choose from {', '.join(known)}")
    for name in asked:
        if known[name] is not None:
            say(f"backend {name}: not measured ({known[name]})")
    return [n for n in asked if known[n] is None]


def run_bench(plan: Plan, out: Path = DEFAULT_OUT, backends: Sequence[str] | None = None, torch: bool = True,
              say: Callable[[str], None] = print) -> tuple[dict[str, Any], list[str]]:
    """Measure, print the tables, write JSON, Markdown and PNG into ``out``; returns the result and what
    was written."""
    started = time.time()
    check_out(out)
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        say(line)

    names = usable_backends(backends, note)
    if not names:
        raise ValueError("no backend to measure")
    m = machine()
    peaks = {"cpu": matmul_peak(get_backend("numpy", "float32"))}
    if "cupy" in names:
        peaks["gpu"] = matmul_peak(get_backend("cupy", "float32"))
    say(f"{m['cpus']} CPUs, {m['processor']}; float32 matmul peak GFLOP/s: "
        + ", ".join(f"{d} {report.quartiles(p, '.1f')}" for d, p in peaks.items()))
    settings = plan.e2e
    settings.backends = [*names, *(["cupy-graph"] if "cupy" in names else [])]
    if plan.e2e_on and torch:
        version, cuda, why = torch_status()
        if version is None:
            note(f"PyTorch rows: none, {why}")
        else:
            gpu = cuda and "cupy" in names  # PyTorch on the GPU beside ours on the GPU
            settings.torch_rows = ["torch", "torch-cuda", "torch-cuda-graph"] if gpu else ["torch"]
            note(f"PyTorch {version}: " + ("CPU, CUDA eager and CUDA graphs" if gpu else
                                           "CPU only (" + ("no GPU backend measured)" if cuda else "no GPU)")))
    elif plan.e2e_on:
        note("PyTorch rows: none (--no-torch)")
    result: dict[str, Any] = {"version": _version(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "machine": m, "quick": plan.quick, "matmul_peak_gflops": peaks, "notes": notes}
    if plan.kernels:
        say("kernels ...")
        result["kernels"] = time_kernels({n: get_backend(n, "float32") for n in names}, rounds=plan.kernel_rounds,
                                         min_seconds=plan.kernel_seconds, say=say)
    if plan.e2e_on:
        say(f"end to end: {', '.join(settings.models)} x {', '.join([*names, *settings.torch_rows])}, "
            f"{settings.rounds} round{'s' * (settings.rounds != 1)} ...")
        result["e2e"] = run_e2e(settings, say)
        result["settings"] = asdict(settings)
    result["seconds"] = time.time() - started
    if result.get("kernels"):
        say("\n" + report.kernel_table(result))
    if result.get("e2e"):
        say("\n" + report.e2e_table(result) + "\n\n" + report.NOTES)
    stem = f"{datetime.date.today().isoformat()}-{machine_id(m)}" + ("-quick" if plan.quick else "")
    return result, report.write(result, out, stem)


def _version() -> str:
    import backprop
    return backprop.__version__
