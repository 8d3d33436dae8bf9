#!/usr/bin/env bash
# Host-thread emulation of the CUDA log-prob kernels against the CPU engine (see
# emulate_cuda_logprobs.cpp). Needs a built tree (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(ls -d build/cp*/ | tail -n 1)
OUT=${TMPDIR:-/tmp}/grpokit_emulate_cuda_logprobs
# Empty stand-ins for the CUDA headers: the .cpp defines what the kernels use.
mkdir -p "$OUT.include"
for h in cuda_runtime.h cuda_bf16.h cuda_fp16.h cublas_v2.h; do : > "$OUT.include/$h"; done
g++ -std=c++20 -O1 -pthread -I"$OUT.include" -Icpp/include -Icpp/src -Icuda scripts/emulate_cuda_logprobs.cpp \
  "$BUILD/libgrpokit_core.a" \
  $( [ -n "$(nm -C "$BUILD/libgrpokit_core.a" 2>/dev/null | grep -m1 omp_get)" ] && echo -fopenmp ) -o "$OUT"
timeout 900 "$OUT"
# A few launches at their real block sizes (up to 512 threads: 16 warps), briefly.
GRPOKIT_EMULATE_FULL_BLOCKS=1 timeout 300 "$OUT"
