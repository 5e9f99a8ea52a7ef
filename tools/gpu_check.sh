#!/usr/bin/env bash
# One-command GPU check (< 8 minutes on one GPU): builds the CUDA kernels, runs the CUDA-only
# tests, a DDP fit on 2 GPUs (1 if only one exists), a bf16-mixed fit, and part (a) of
# benchmarks/adversarial_training.py with --device cuda. Every stage is timed and logged; a
# failing stage is recorded and the next one still runs. Exit status: 0 if every stage passed.
#
# Usage: tools/gpu_check.sh [RESULTS_DIR]          (default: gpu_results/)
#   PYTHON=/path/to/python   interpreter with torch (default: .venv/bin/python, else python3)
#   CUDA_HOME, TORCH_CUDA_ARCH_LIST, MAX_JOBS       build settings (defaults below)
#   GPU_CHECK_SKIP="build ..."  stages to skip (recorded as skipped), e.g. on a rerun
# Results: RESULTS_DIR/summary.tsv (stage, status, seconds), RESULTS_DIR/<stage>.log, the JSON of
# each fit and of the benchmark, and RESULTS_DIR/summary.json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-gpu_results}" && cd "${1:-gpu_results}" && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-8}" WANDB_MODE=offline WANDB_SILENT=true
export ROBUST_LIGHTNING_REQUIRE_NATIVE=1 ROBUST_LIGHTNING_EXPECT_CUDA_KERNELS=1

SUMMARY="$OUT/summary.tsv"
printf 'stage\tstatus\tseconds\n' > "$SUMMARY"
FAILED=0

# run_stage NAME TIMEOUT_S COMMAND...: run, time and log one stage; never aborts the script.
run_stage() {
  local name="$1" limit="$2"; shift 2
  local start end rc
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
    printf '%s\tskipped\t0\n' "$name" >> "$SUMMARY"
    echo "== $name: skipped (GPU_CHECK_SKIP)"
    return 0
  fi
  echo "== $name (limit ${limit}s): $*"
  start=$(date +%s.%N)
  set +e
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  set -e
  end=$(date +%s.%N)
  local seconds status
  seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -eq 0 ]; then status=ok; elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=timeout; else status="failed($rc)"; fi
  [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
  printf '%s\t%s\t%s\n' "$name" "$status" "$seconds" >> "$SUMMARY"
  echo "   -> $status in ${seconds}s (log: $OUT/$name.log)"
  tail -n 3 "$OUT/$name.log" | sed 's/^/      /'
  return 0
}

run_stage env 60 bash -c "nvidia-smi && \"$PYTHON\" -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"gpus\", torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])'"

GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
DDP_DEVICES=$(( GPUS >= 2 ? 2 : 1 ))

# In-place build of robust_lightning._C with the CUDA kernels (nothing is installed).
run_stage build 240 bash -c "source tools/cuda_env.sh \"$PYTHON\"; export FORCE_CUDA=1; \
  \"$PYTHON\" setup.py build_ext --inplace && \"$PYTHON\" -c 'from robust_lightning import ops; import torch; \
  print(torch._C._dispatch_has_kernel_for_dispatch_key(\"robust_lightning::linf_step_\", \"CUDA\"))' | grep -q True"

# Every test that is skipped without CUDA: the ops' CUDA parametrisations, the CUDA-generator
# checks of the attack core, and the engine/bf16 tests that run on whatever device exists.
run_stage cuda_tests 150 "$PYTHON" -m pytest -q -n 0 -p no:cacheprovider -rs \
  tests/test_ops.py "tests/attacks/test_core.py::test_cpu_generator_with_cuda_inputs_is_named" \
  "tests/attacks/test_core.py::test_cuda_inputs_stay_on_cuda_with_cuda_generator"

run_stage ddp_fit 150 "$PYTHON" tools/gpu_fit_check.py --devices "$DDP_DEVICES" --precision 32-true \
  --out "$OUT/ddp_fit.json"
run_stage bf16_fit 120 "$PYTHON" tools/gpu_fit_check.py --devices 1 --precision bf16-mixed \
  --out "$OUT/bf16_fit.json"

# Benchmark (a) on the GPU: CUDA graphs (reduce-overhead) first; if that stage fails, the default
# compile mode, so the table still gets a GPU row.
# Three variants (the baseline, our plain callback, all options) keep it to one compile.
BENCH_A=(--device cuda --parts a --variants torchattacks_by_hand,ours_plain,ours_fast --seeds-a 1 --epochs-a 4)
run_stage benchmark_a 300 "$PYTHON" benchmarks/adversarial_training.py "${BENCH_A[@]}" \
  --out "$OUT/adversarial_training_cuda.json"
if ! grep -q "^benchmark_a"$'\t'"ok" "$SUMMARY"; then
  run_stage benchmark_a_default_mode 300 "$PYTHON" benchmarks/adversarial_training.py "${BENCH_A[@]}" \
    --compile-mode default --out "$OUT/adversarial_training_cuda.json"
fi

"$PYTHON" - "$SUMMARY" "$OUT/summary.json" <<'EOF' || true
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
json.dump({"stages": rows, "all_ok": all(r["status"] in ("ok", "skipped") for r in rows)}, open(sys.argv[2], "w"), indent=2)
EOF
echo "== summary ($SUMMARY)"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
[ "$FAILED" -eq 0 ]
