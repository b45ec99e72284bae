#!/usr/bin/env bash
# The GPU job: one call of the device tool, in stages that each have a time limit of their own (460 s
# together, 500 s with the grace before a kill) and write their results into $OUT as soon as they end,
# so that a stage that hangs or runs over costs only itself. At most 8 files come back from the device
# machine; these are they:
#   log.txt        setup (device, versions, install) and every stage's output, in order
#   smoke.json     bench/gpu_smoke.py: cold start, cupy against numpy, no host sync, graph against eager
#   e2e.json/.md   backprop bench, SimpleConvNet: cupy eager and graph against PyTorch CUDA eager and graphs
#   accuracy.csv   SimpleConvNet on full MNIST with --cuda-graph: test accuracy and seconds, epoch by epoch
#   cpu-threads.md the machine's CPUs: numba and numpy against PyTorch CPU at 1, 4, 8 and 16 threads
#   kernels.json   backprop bench, kernels: every kernel on every backend, quick
#   profile.json   backprop profile of a cupy SimpleConvNet step
# Run it from the device tool as
#   run(command="COMMIT=<hash> bash bench/gpu_job.sh", carry=[".data"], timeout_s=540)
# after copying ../shared/data/mnist to .data/mnist (ignored through .git/info/exclude); anywhere else,
# `OUT=/tmp/gpu bash bench/gpu_job.sh` is a dry run (stages that need a GPU say so and end).
set -uo pipefail
PY=${PY:-python3}  # on the device machine, python3 is the interpreter that holds CuPy and torch
OUT=${OUT:-bench/results/gpu-$(date +%F)}
DATA=${DATA:-.data/mnist}
mkdir -p "$OUT"
log="$OUT/log.txt"
scratch=$(mktemp -d)
stage() {  # stage NAME SECONDS COMMAND...: its output appended to the log, then its exit status and time
  local name=$1 secs=$2 start=$SECONDS
  shift 2
  echo "== stage $name (at most ${secs}s): $*" >> "$log"
  timeout --signal=INT --kill-after=5 "$secs" "$@" >> "$log" 2>&1
  echo "== stage $name: exit $? after $((SECONDS - start))s" >> "$log"
}
keep() {  # keep FILE NAME: a result the stage wrote into scratch space, copied into $OUT if it is there
  if [ -f "$1" ]; then cp "$1" "$OUT/$2"; else echo "== (no $2: the stage wrote no $1)" >> "$log"; fi
}
echo "== commit ${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}, $(date -u +%FT%TZ)" > "$log"
# 30 s: the device, the versions, the install.
stage setup 30 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  $PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -n 3;
  $PY -c \"import sys, numpy; print(sys.version.split()[0], 'numpy', numpy.__version__)\";
  $PY -c \"import cupy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion())\";
  $PY -c \"import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)\";
  $PY -m backprop info"

# 50 s: does the GPU backend train at all (each check prints one line), then one CLI epoch each way.
stage smoke 50 bash -c "$PY bench/gpu_smoke.py --out $scratch;
  $PY -m backprop train --backend cupy --epochs 1 --no-progress --run-dir $scratch/eager;
  $PY -m backprop train --backend cupy --epochs 1 --no-progress --cuda-graph --run-dir $scratch/graph"
keep "$scratch/smoke.json" smoke.json
# 100 s: the GPU tests (CPU-only tests are CI's job), each with a time limit; a first run may fail many.
stage gpu-tests 100 $PY -m pytest -q -p no:cacheprovider -m gpu --timeout 60 --maxfail=25 tests
# 50 s: our kernels under compute-sanitizer's memcheck, with CuPy's memory pool off (its large blocks
# would hide a small overrun) and without the test that runs out of memory on purpose.
BACKPROP_CUPY_POOL=0 stage memcheck 50 compute-sanitizer --tool memcheck --error-exitcode 1 \
  $PY -m pytest -q -p no:cacheprovider -m gpu --timeout 45 -k "not out_of_memory" tests/test_cuda_kernels.py \
  tests/test_cuda_build.py
# 125 s: end to end against PyTorch CUDA (eager and graphs; TF32 off), then time to accuracy on full MNIST.
stage e2e 90 $PY -m backprop bench --only e2e --backends cupy --models simpleconvnet --rounds 2 --out "$scratch/e2e"
keep "$(ls "$scratch"/e2e/*.json 2>/dev/null | head -n 1)" e2e.json
keep "$(ls "$scratch"/e2e/*.md 2>/dev/null | head -n 1)" e2e.md
stage accuracy 35 $PY -m backprop train --backend cupy --cuda-graph --epochs 3 --data-dir "$DATA" --no-progress \
  --run-dir "$scratch/mnist"
keep "$scratch/mnist/metrics.csv" accuracy.csv
# 60 s: this machine's 16 cores, for the CPU backends (the table is rewritten after each thread count).
stage cpu-threads 60 $PY bench/cpu_threads.py --threads 1,4,8,16 --backends numpy,numba --rounds 1 \
  --train-images 500 --out "$scratch/cpu"
keep "$scratch/cpu/cpu-threads.md" cpu-threads.md
# 45 s: kernels, then where a cupy step's time goes.
stage kernels 30 $PY -m backprop bench --only kernels --quick --out "$scratch/kernels"
keep "$(ls "$scratch"/kernels/*.json 2>/dev/null | head -n 1)" kernels.json
stage profile 15 $PY -m backprop profile --model simpleconvnet --backend cupy --json "$scratch/profile.json"
keep "$scratch/profile.json" profile.json
grep "^== stage" "$log"
