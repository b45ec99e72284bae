#!/usr/bin/env bash
# The whole GPU job in one call of the device tool: install, record the device, run the full test suite
# (GPU tests included), then the kernel micro-benchmarks and the end-to-end harness. Everything lands in
# $OUT (at most 8 files come back from the device machine), to be committed under bench/results/.
#
# The device image already holds CuPy, Numba, torch, pytest, pytest-benchmark, hypothesis, tqdm and
# matplotlib (see the device tool's KINDS.md), so nothing needs carrying:
#   run(command="COMMIT=<hash> bash bench/gpu_job.sh")               # from the device tool
#   COMMIT=$(git rev-parse HEAD) OUT=/tmp/gpu bash bench/gpu_job.sh  # anywhere, as a dry run
set -uo pipefail
PY=${PY:-python3}  # on the device machine, python3 is the interpreter that holds CuPy and torch
OUT=${OUT:-bench/results/gpu-$(date +%F)}
mkdir -p "$OUT"
log="$OUT/log.txt"
{
  echo "== commit ${COMMIT:-unknown}, $(date -u +%FT%TZ)"
  nvidia-smi || echo "nvidia-smi: not available"
  $PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -n 3
  $PY -c "import numpy, backprop; print('numpy', numpy.__version__); print(backprop.available_backends())"
  $PY -c "import cupy; print('cupy', cupy.__version__)" || true
  echo "== tests (all, GPU included)"
  $PY -m pytest -q -p no:cacheprovider -rs tests 2>&1 | tail -n 60
  echo "pytest exit ${PIPESTATUS[0]}"
} > "$log" 2>&1
$PY -m pytest -q -p no:cacheprovider bench/test_kernels_bench.py --benchmark-only \
  --benchmark-json="$OUT/kernels.json" --benchmark-columns=median,iqr,rounds > "$OUT/kernels.txt" 2>&1
$PY bench/e2e.py --rounds 1 --out "$OUT" > "$OUT/e2e.txt" 2>&1  # one round: the device call has 10 minutes
tail -n 4 "$log"
tail -n 16 "$OUT/e2e.txt"
