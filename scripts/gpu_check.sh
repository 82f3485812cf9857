#!/usr/bin/env bash
# The GPU figures, ready for the first GPU: on one GPU, in under 8 minutes, the training, evaluation
# (random and trained models) and checkpoint benchmarks, the memory plan against torch.cuda.max_memory_allocated
# (scripts/plan_vs_gpu.py)
# with --device cuda, then a bf16 smoke run of `peftbench run lora --mode dev`. One line per figure
# (`name: value (ratio vs baseline)`), each step bounded by a timeout. See docs/benchmarks.md.
#
#   scripts/gpu_check.sh [--dry-run]      # PYTHON=... to choose the interpreter (default .venv/bin/python)
#
# Without a CUDA device it prints one line and exits 3; --dry-run prints the commands without running them.
# The timeouts add up to 475 s; a step that runs out prints FAILED with its log and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (only --dry-run)" >&2; exit 2 ;;
  esac
done
OUT=${GPU_CHECK_OUT:-$(mktemp -d -t peftbench-gpu-check-XXXX)}
STEPS=(
  "120|bench/train_bench.py --device cuda"
  "90|bench/eval_bench.py --device cuda --mode random"
  "100|bench/eval_bench.py --device cuda --mode trained"
  "45|bench/checkpoint_bench.py --device cuda"
  "30|scripts/plan_vs_gpu.py"
  "90|-m peftbench run lora --mode dev model.dtype=bfloat16 train.mixed_precision=bf16 output_dir=$OUT/dev --no-progress"
)
if [ "$DRY" = 1 ]; then
  for step in "${STEPS[@]}"; do echo "timeout ${step%%|*} $PY ${step#*|}"; done
  exit 0
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 3
fi
"$PY" -c 'import torch; print("gpu:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
failed=0
for step in "${STEPS[@]}"; do
  limit=${step%%|*}; cmd=${step#*|}
  log="$OUT/$(echo "$cmd" | tr -c 'a-zA-Z0-9' '_' | cut -c1-60).log"
  # shellcheck disable=SC2086
  if timeout "$limit" "$PY" $cmd >"$log" 2>&1; then
    grep -E '^[a-z].*: [0-9.,e+-]+ ' "$log" | grep -v '^step ' || true
    case "$cmd" in *"peftbench run"*) tail -n 1 "$log" | sed 's/^/dev bf16 smoke: /' ;; esac
  else
    echo "FAILED (exit $?, limit ${limit}s): $cmd; log: $log"
    failed=1
  fi
done
exit $failed
