#!/usr/bin/env bash
# The whole GPU job in one call of the device tool: install, record the device, run the full test suite
# (GPU tests included), then `backprop bench` (kernels and end to end, PyTorch CUDA eager and CUDA graphs
# beside CuPy) and `backprop profile` on the GPU. Everything lands in $OUT, to be committed under bench/results/.
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
# Each stage has its own time limit inside the device call's 10 minutes and writes its output straight
# into $OUT, so a stage that runs over is cut short (SIGINT: pytest still prints its summary) and
# whatever the earlier stages wrote still comes back.
stage() {  # stage SECONDS OUTPUT-FILE COMMAND...
  local secs=$1 file=$2
  shift 2
  timeout --signal=INT --kill-after=15 "$secs" "$@" > "$file" 2>&1
  echo "== exit $? after at most ${secs}s: $*" >> "$log"
}
{
  echo "== commit ${COMMIT:-unknown}, $(date -u +%FT%TZ)"
  nvidia-smi || echo "nvidia-smi: not available"
  $PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -n 3
  $PY -c "import numpy, backprop; print('numpy', numpy.__version__); print(backprop.available_backends())"
  $PY -c "import cupy; print('cupy', cupy.__version__)" || true
} > "$log" 2>&1
stage 270 "$OUT/tests.txt" $PY -m pytest -q -p no:cacheprovider -rs tests  # all, GPU included
stage 240 "$OUT/bench.txt" $PY -m backprop bench --rounds 1 --out "$OUT"  # adds its .json, .md and .png
stage 40 "$OUT/profile.txt" $PY -m backprop profile --model simpleconvnet --backend cupy --json "$OUT/profile.json"
cat "$log"
tail -n 3 "$OUT/tests.txt"
tail -n 24 "$OUT/bench.txt"
