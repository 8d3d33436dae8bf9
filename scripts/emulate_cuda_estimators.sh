#!/usr/bin/env bash
# Host-thread emulation of the CUDA estimator and correction kernels against the CPU engine (see
# emulate_cuda_estimators.cpp). Needs a built tree (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(ls -d build/cp*/ | tail -n 1)
OUT=${TMPDIR:-/tmp}/grpokit_emulate_cuda_estimators
g++ -std=c++20 -O1 -pthread -Icpp/include -Icuda scripts/emulate_cuda_estimators.cpp "$BUILD/libgrpokit_core.a" \
  $( [ -n "$(nm -C "$BUILD/libgrpokit_core.a" 2>/dev/null | grep -m1 omp_get)" ] && echo -fopenmp ) -o "$OUT"
timeout 900 "$OUT"
