#!/usr/bin/env bash
# Host-thread emulation of the CUDA Adam-state kernels against the CPU engine (see emulate_cuda_adam.cpp).
# Needs a built tree (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(ls -d build/cp*/ | tail -n 1)
OUT=${TMPDIR:-/tmp}/grpokit_emulate_cuda_adam
g++ -std=c++20 -O1 -pthread -Icpp/include -Icuda -x c++ scripts/emulate_cuda_adam.cpp -x none "$BUILD/libgrpokit_core.a" \
  $( [ -n "$(nm -C "$BUILD/libgrpokit_core.a" 2>/dev/null | grep -m1 omp_get)" ] && echo -fopenmp ) -o "$OUT"
timeout 900 "$OUT"
# a few checks again with blocks at their real launch size (FULL_BLOCKS=0 skips)
if [ "${FULL_BLOCKS:-1}" != 0 ]; then EMULATE_MAX_BLOCK=1024 timeout 900 "$OUT"; fi
