#!/usr/bin/env bash
# GPU acceptance in one call (docs/gpu.md, "The GPU check"): builds grpokit with CUDA for this device's
# architecture and cuBLAS from torch's nvidia-cublas wheel, runs every GPU test with per-test timeouts,
# compute-sanitizer's four tools over a reduced set that reaches every kernel family, and the GPU
# benchmarks. Each stage has a time limit inside an overall budget (GPU_CHECK_BUDGET seconds, default
# 450); what a stage wrote stays when it is stopped. One summary line per stage at the end.
#
#   bash scripts/gpu_check.sh OUT                # on the GPU machine (python3 with CUDA torch)
#   bash scripts/gpu_check.sh --dry-run OUT      # anywhere: the same stages, GPU work "skipped: no GPU"
#
# OUT receives at most 8 files: summary.txt, env.txt, build.log, gpu_tests.log, gpu_tests.xml,
# sanitizer.log, bench.log, bench_logprobs.csv. Wheels the machine lacks come from .gpu_wheels/
# (scripts/gpu_wheels.sh; GPU_WHEELS overrides the folder).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:?usage: gpu_check.sh [--dry-run] OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-460}
WHEELS=${GPU_WHEELS:-.gpu_wheels}
START=$SECONDS
SUMMARY=()
FAILED=0
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg

HAVE_GPU=0
if [ $DRY = 0 ] && nvidia-smi -L >/dev/null 2>&1; then HAVE_GPU=1; fi
if [ $DRY = 0 ] && [ $HAVE_GPU = 0 ]; then
  echo "gpu_check: no GPU here (nvidia-smi -L fails); use --dry-run" >&2
  exit 2
fi
ARCH=${GPU_ARCH:-90}  # Hopper (H100/H200); compile time is device time, so one architecture
if [ $HAVE_GPU = 1 ] && [ -z "${GPU_ARCH:-}" ]; then
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')
fi

# stage NAME SECONDS COMMAND...: runs COMMAND with at most SECONDS (less if the budget is nearly
# spent), its output appended to the stage's log by the command itself; records one summary line.
stage() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - (SECONDS - START)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    SUMMARY+=("$(printf '%-10s skipped: the %ss budget is spent' "$name" "$BUDGET")")
    return
  fi
  local t0=$SECONDS rc=0
  echo "== $name (at most ${limit}s)"
  STAGE_LIMIT=$limit timeout --kill-after=10 "$limit" bash -c "source '$STATE' && $*" || rc=$?
  local took=$((SECONDS - t0)) note=${STAGE_NOTE:-}
  if [ $rc = 0 ] && [[ $note == skipped:* ]]; then  # dry run: the GPU work skipped, the rest ran
    SUMMARY+=("$(printf '%-10s %s; the rest ok (%ss)' "$name" "$note" "$took")")
  elif [ $rc = 0 ]; then
    SUMMARY+=("$(printf '%-10s ok (%ss)%s' "$name" "$took" "${note:+: $note}")")
  elif [ $rc = 124 ] || [ $rc = 137 ]; then
    SUMMARY+=("$(printf '%-10s TIMED OUT after %ss (partial results kept)' "$name" "$took")"); FAILED=1
  else
    SUMMARY+=("$(printf '%-10s FAILED (exit %s, %ss): see its log in %s' "$name" "$rc" "$took" "$OUT")"); FAILED=1
  fi
  STAGE_NOTE=""
}
skip() { SUMMARY+=("$(printf '%-10s skipped: %s' "$1" "$2")"); }

# ---- the stages (each a function so `timeout` can run it in a subshell) ---------------------------------

env_info() {
  {
    echo "date: $(date -u +%FT%TZ)"; echo "commit: $(git rev-parse HEAD 2>/dev/null || echo "${GPU_CHECK_COMMIT:-unknown (no .git; set GPU_CHECK_COMMIT)}")"
    echo "host: $(uname -srm), $(nproc) cores"
    if [ $HAVE_GPU = 1 ]; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.memory --format=csv
    else
      echo "GPU: none (dry run)"
    fi
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    command -v compute-sanitizer >/dev/null && compute-sanitizer --version | tail -n 1
    $PY -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    $PY -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -n 1  # tests/python/test_jax_gpu.py needs a JAX GPU backend
  } >"$OUT/env.txt" 2>&1
}

wheels() {  # into a private folder on PYTHONPATH: the machine's own packages stay as they are
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
}

# The nvidia-cublas wheel's root (include/cublas_v2.h, lib/libcublas.so.N): the one torch loads.
cublas_root() {
  $PY -c "import importlib.metadata as m, sys; f = [p for p in (m.files('nvidia-cublas') or []) if p.name == 'cublas_v2.h']; sys.stdout.write(str(f[0].locate().resolve().parents[1]) if f else '')" 2>/dev/null
}

INSTALL=($PY -m pip install -q --no-build-isolation --no-deps --no-index .
  --config-settings=build-dir=build/gpu --config-settings=cmake.define.GRPOKIT_CUDA=ON
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="$ARCH"
  --config-settings=cmake.define.GRPOKIT_CUBLAS_ROOT="$(cublas_root)")

# Every GPU path must be built (cuBLAS too), and on the GPU machine a device must be visible.
check_info() {
  $PY -m grpokit info --json | $PY -c "
import json, sys
info = json.load(sys.stdin)
print(json.dumps(info, indent=1))
missing = [k for k, v in info['cuda_paths'].items() if not v]
if $HAVE_GPU and (missing or info['cuda_devices'] < 1):
    sys.exit(f'GPU paths not built: {missing}, devices: {info[\"cuda_devices\"]}')
"
}

build() {
  {
    echo "+ ${INSTALL[*]}"
    if [ $HAVE_GPU = 1 ]; then CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${INSTALL[@]}" || return 1; fi
    check_info
  } >>"$OUT/build.log" 2>&1
}

TIMEOUT_ARGS=()
$PY -c "import pytest_timeout" 2>/dev/null && TIMEOUT_ARGS=(-p pytest_timeout --timeout=60)

# The verl end-to-end test has a stage of its own (below): its set-up is slow and it needs verl's engine.
VERL_TEST=tests/python/test_verl_fsdp_gpu.py

gpu_tests() {
  $PY -m pytest tests/python -m gpu -q -p no:cacheprovider "${TIMEOUT_ARGS[@]}" --junitxml="$OUT/gpu_tests.xml" \
    --ignore="$VERL_TEST" >>"$OUT/gpu_tests.log" 2>&1
}

# One actor update through verl's FSDP model engine, verl's loss vs grpokit's (issue 19; docs/verl.md).
# verl's engine imports peft, tensordict (.gpu_wheels brings them) and ray, whose wheel alone is larger
# than the 64 MiB that travels to the GPU machine: without ray, tests/shims/ray stands in (verl uses
# only ray.ObjectRef, in annotations, on this one-process path; anything more fails loudly).
verl_e2e() {
  $PY -c "import ray" >/dev/null 2>&1 || export PYTHONPATH="$PWD/tests/shims${PYTHONPATH:+:$PYTHONPATH}"
  $PY -m pytest "$VERL_TEST" -q -p no:cacheprovider -rs "${TIMEOUT_ARGS[@]/--timeout=60/--timeout=240}" \
    >>"$OUT/gpu_tests.log" 2>&1
}

# A reduced set that reaches every kernel family once at least: the loss (padded and packed, float32
# and bfloat16, the top-entropy selection), advantages, estimators, corrections, log-probabilities
# from logits and through cuBLAS, the Adam-state diagnostics.
SANITIZE=(
  "tests/python/test_loss_gpu.py::test_every_preset_padded_odd_shape[trl.grpo-torch.float32]"
  "tests/python/test_loss_gpu.py::test_every_preset_padded_odd_shape[paper.gspo-torch.bfloat16]"
  "tests/python/test_loss_gpu.py::test_every_preset_packed[trl.dapo-torch.bfloat16]"
  "tests/python/test_loss_gpu.py::test_top_entropy_quantile_ties_keep_the_same_tokens[torch.float32-0.2]"
  "tests/python/test_advantages_gpu.py::test_side_stream_and_mixed_devices"
  "tests/python/test_estimators_gpu.py::test_inputs_in_other_dtypes_and_layouts"
  "tests/python/test_corrections_gpu.py::test_correction_presets_match_cpu"
  "tests/python/test_corrections_variance_proxy.py::test_cuda_kernel_equals_the_cpu_engine[True-bfloat16]"
  "tests/python/test_logprobs_sum_sq.py::test_gpu_matches_cpu[4097-bfloat16]"
  "tests/python/test_logprobs_sampler_gpu.py::test_matches_cpu[kw8-ties-vllm-full]"
  "tests/python/test_logprobs_sampler_gpu.py::test_16bit_per_row_parameters_3d_and_strided[bfloat16]"
  "tests/python/test_linear_logprobs.py::test_gpu_matches_cpu[bfloat16]"
  "tests/python/test_diagnostics_gpu.py::test_reward_scale_on_device_state_equals_the_cpu_engine[torch.bfloat16]"
  "tests/python/test_diagnostics_gpu.py::test_rho_and_updates_stay_on_the_device"
)

sanitize() {  # a quarter of the stage's time per tool, so a slow one leaves the others theirs
  local tool rc=0
  for tool in memcheck racecheck synccheck initcheck; do
    echo "== compute-sanitizer --tool $tool" >>"$OUT/sanitizer.log"
    timeout $((STAGE_LIMIT / 4)) compute-sanitizer --tool "$tool" --error-exitcode 1 --print-limit 20 --target-processes all \
      $PY -m pytest -q -p no:cacheprovider "${SANITIZE[@]}" >>"$OUT/sanitizer.log" 2>&1 || rc=1
  done
  return $rc
}

# Dry run: the same selection must still name tests that exist (and the verl test still collects).
sanitize_selection() {
  $PY -m pytest -q -p no:cacheprovider --collect-only "${SANITIZE[@]}" "$VERL_TEST" >>"$OUT/sanitizer.log" 2>&1
}

bench() {
  {
    echo "== policy loss: N = 2^20 (256 x 4096) ... 2^23 tokens"
    $PY benchmarks/bench_policy_loss.py --device cuda --tokens 20:23 --dtypes float32,bfloat16
    echo "== token log-probs + entropy + gradient, bf16 logits 8192 x 151936"
    $PY benchmarks/bench_logprobs.py --device cuda --dtype bfloat16 --shapes 8192x151936 --backward --compile \
      --csv "$OUT/bench_logprobs.csv"
    echo "== hidden x weight path (peak memory against Liger's fused linear and cut-cross-entropy)"
    $PY benchmarks/bench_logprobs.py --device cuda --dtype bfloat16 --hidden 4096 --shapes 8192x151936 --backward \
      --csv "$OUT/bench_logprobs.csv"
    # the Adam-state diagnostics on a 1-billion-coordinate state against one AdamW.step (target ≤ 1×)
    $PY benchmarks/bench_diagnostics.py --device cuda --adam-only --adam-coords 1000000000 --repeat 6
  } >>"$OUT/bench.log" 2>&1
}

bench_scripts() {  # dry run: the benchmark scripts still import and parse their arguments
  for b in bench_policy_loss bench_logprobs bench_diagnostics; do $PY "benchmarks/$b.py" --help >/dev/null || return 1; done
}

# ---- run --------------------------------------------------------------------------------------------------

# `timeout` runs a fresh bash: it reads the functions and settings above from this file.
SITE=${TMPDIR:-/tmp}/grpokit_gpu_site
STATE=${TMPDIR:-/tmp}/grpokit_gpu_check_state.sh
{ declare -p OUT PY HAVE_GPU WHEELS SITE INSTALL TIMEOUT_ARGS SANITIZE VERL_TEST; declare -f; } >"$STATE"
stage env 30 env_info
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  STAGE_NOTE="$(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS"; stage wheels 90 wheels
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  skip wheels "no wheel folder $WHEELS (scripts/gpu_wheels.sh)"
fi
if [ $HAVE_GPU = 1 ]; then
  STAGE_NOTE="sm_$ARCH"; stage build 200 build
  stage tests 120 gpu_tests
  if $PY -c "import verl.workers.engine" >/dev/null 2>&1 ||
    PYTHONPATH="$PWD/tests/shims${PYTHONPATH:+:$PYTHONPATH}" $PY -c "import verl.workers.engine" >/dev/null 2>&1; then
    stage verl 60 verl_e2e
  else
    skip verl "verl's engine does not import here (verl, peft, tensordict; $VERL_TEST)"
  fi
  stage sanitizer 100 sanitize
  stage bench 90 bench
else
  STAGE_NOTE="skipped: no GPU (no rebuild; the installed build's info read)"; stage build 60 build
  STAGE_NOTE="skipped: no GPU (the GPU tests collected and skipped)"; stage tests 120 gpu_tests
  skip verl "no GPU ($VERL_TEST collected with the sanitizer's selection)"
  STAGE_NOTE="skipped: no GPU (the selection collected)"; stage sanitizer 60 sanitize_selection
  STAGE_NOTE="skipped: no GPU (the scripts parse their arguments)"; stage bench 60 bench_scripts
fi

printf '%s\n' "${SUMMARY[@]}" "total: $((SECONDS - START))s of ${BUDGET}s$([ $DRY = 1 ] && echo ' (dry run)')" | tee "$OUT/summary.txt"
exit $FAILED
