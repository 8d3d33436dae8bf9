#!/usr/bin/env bash
# Installs everything grpokit needs on a fresh Debian machine, builds once, and runs every test:
# the C++ (Catch2) and, with GRPOKIT_CUDA=ON, the CUDA kernels on host threads (both via ctest), the
# sanitizer build of the C++ tests, the Python tests (pytest) and the GPU check's dry run.
# Usage: bash scripts/test.sh        (root, or sudo available, for the apt step)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need_apt=()
dpkg -s catch2 >/dev/null 2>&1 || need_apt+=(catch2)
dpkg -s libeigen3-dev >/dev/null 2>&1 || need_apt+=(libeigen3-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== pip: torch (CPU build from local disk) first, then the build tools and extras"
python -m pip install -q "torch==2.13.0"
python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" "cmeel-eigen>=3.4" ninja cmake
if [ "${GRPOKIT_CUDA:-AUTO}" = "ON" ]; then
  # The CPU machines' CUDA toolkit has no cuBLAS: its CUDA 13 wheel (headers and library) lets the
  # build compile the cuBLAS path of linear_token_logprobs (CMakeLists.txt finds it in this Python).
  python -m pip install -q "nvidia-cublas==13.0.2.14"
fi
# verl for the parity and integration tests: verl without its own pins (they conflict with the trl extra);
# the `verl` extra below brings what importing its trainer and actor loss needs (docs/verl.md)
python -m pip install -q --no-deps "verl==0.9.1"
# jax (CPU wheels) before the build: CMake compiles grpokit._jax_ffi only when jax imports (docs/jax.md)
python -m pip install -q "jax[cpu]>=0.10" "optax>=0.2"
python -m pip install -q --no-build-isolation -e ".[torch,trl,test,notebooks,bench,verl,megatron,jax,deepspeed]" \
  --config-settings=cmake.define.GRPOKIT_CUDA="${GRPOKIT_CUDA:-AUTO}" \
  --config-settings=cmake.define.GRPOKIT_BUILD_TESTS=ON

echo "== style: ruff (lint + format) and clang-format, as configured in pyproject.toml and .clang-format"
python -m pip install -q "ruff==0.17.6" "clang-format==23.1.5"
bash scripts/lint.sh

BUILD_DIR=$(ls -d build/cp*/ | tail -n 1)
echo "== grpokit info"
grpokit info
python -m mypy.stubtest grpokit._core $(python -c "import grpokit._cuda" 2>/dev/null && echo grpokit._cuda) \
  $(python -c "import grpokit._jax_ffi" 2>/dev/null && echo grpokit._jax_ffi) \
  $(python -c "import grpokit._jax_ffi_cuda" 2>/dev/null && echo grpokit._jax_ffi_cuda) --allowlist scripts/stubtest_allowlist.txt
if [ "${GRPOKIT_CUDA:-AUTO}" = "ON" ]; then  # every GPU path compiled, the cuBLAS one included
  grpokit info --json | python -c "import json,sys; p = json.load(sys.stdin)['cuda_paths']; sys.exit(0 if all(p.values()) else f'GPU paths not compiled: {p}')"
fi

# With CUDA on, ctest also runs every .cu file's kernels on host threads against the CPU engine
# (tests/cuda_emulation, label "emulation"; docs/gpu.md), two programs at a time.
echo "== C++ tests (ctest, $BUILD_DIR)"
ctest --test-dir "$BUILD_DIR" --output-on-failure --parallel 2

echo "== C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (CUDA off, own build dir)"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGRPOKIT_SANITIZE=ON -DGRPOKIT_CUDA=OFF \
  -DGRPOKIT_BUILD_PYTHON=OFF -DGRPOKIT_BUILD_TESTS=ON >/dev/null
cmake --build build/asan -j 2
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure

bash scripts/check_wheel.sh  # pip wheel . into a fresh venv: grpokit info and one loss call there
echo "== Python tests"
set +e
python -m pytest tests/python -q -p no:cacheprovider
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi
[ $rc -ne 0 ] && exit $rc

echo "== GPU check, dry run (scripts/gpu_check.sh: the same stages, GPU work skipped)"
PYTHON=python bash scripts/gpu_check.sh --dry-run "$(mktemp -d)"
