#!/usr/bin/env bash
# Fills the wheel folder that scripts/gpu_check.sh installs on the GPU machine, which has no network:
# what that machine's python3 (3.12, PyTorch 2.11 CUDA 13, pybind11, scikit-build-core, transformers,
# accelerate, pandas, pyarrow, pytest, pytest-timeout, ...) lacks for building and testing grpokit. Run it on any machine
# that reaches PyPI; the folder (git-ignored) travels with the source tree (64 MiB in all).
#   bash scripts/gpu_wheels.sh [FOLDER]     (default .gpu_wheels)
# cuBLAS is not here: torch's CUDA wheels bring nvidia-cublas (headers and library) to that machine,
# and the CUDA 13 wheel alone is over 400 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.gpu_wheels}
mkdir -p "$DEST"
# Exact versions: the ones CI tests with (pyproject.toml, scripts/test.sh), so the GPU run matches.
PACKAGES=(
  cmeel==0.62.0 cmeel-eigen==3.4.1               # Eigen 3.4 headers for the build
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19   # TRL parity tests and benchmarks
  liger-kernel==0.8.5 cut-cross-entropy==25.1.1   # the benchmarks' comparisons
  verl==0.9.1 tensordict==0.15.3 pyvers==0.2.3 omegaconf==2.3.0 hydra-core==1.3.2 codetiming==1.4.0
)                                                 # verl's FSDP engine (Ray: tests/shims/ray, see gpu_check.sh)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$DEST" "${PACKAGES[@]}"
# omegaconf's parser runtime is published as a source archive only (pure Python): build its wheel here
python3 -m pip wheel -q --no-deps -w "$DEST" antlr4-python3-runtime==4.9.3
size_kib=$(du -sk "$DEST" | cut -f1)
echo "$DEST: $(ls "$DEST" | wc -l) wheels, $((size_kib / 1024)) MiB"
if [ "$size_kib" -gt $((48 * 1024)) ]; then
  echo "over 48 MiB: with the source tree it may not fit the 64 MiB the GPU machine receives" >&2
  exit 1
fi
