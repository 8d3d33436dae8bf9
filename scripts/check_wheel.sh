#!/usr/bin/env bash
# CI: `pip wheel .` builds a wheel that installs into a fresh virtual environment (no system packages:
# the wheel's own dependencies come from the package index) where `grpokit info` and one
# grpokit.policy_loss call run. CUDA is off: the packaging is what is checked here (the kernels are
# checked elsewhere), and it keeps the build short. The build tools (scikit-build-core, pybind11,
# cmeel-eigen, ninja, cmake) must be installed already, as scripts/test.sh does: no build isolation.
# Usage: bash scripts/check_wheel.sh [DIR]     (DIR keeps the wheel, build and venv; default: a temp dir,
#                                              removed at the end)
set -euo pipefail
if [ -n "${1:-}" ]; then mkdir -p "$1" && dir=$(cd "$1" && pwd); else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi
cd "$(dirname "$0")/.."
echo "== wheel: pip wheel . into a fresh virtual environment ($dir)"
# own build dir: the editable install's build/<wheel tag>/ keeps its configuration
python -m pip wheel . --no-deps --no-build-isolation -q -w "$dir/wheel" \
  --config-settings=build-dir="$dir/build" \
  --config-settings=cmake.define.GRPOKIT_CUDA=OFF --config-settings=cmake.define.GRPOKIT_BUILD_TESTS=OFF
wheel=$(ls "$dir"/wheel/grpokit-*.whl)
python -m venv --clear "$dir/venv"
"$dir/venv/bin/python" -m pip install -q "$wheel"
cd "$dir"  # away from the source tree: the installed wheel is what gets imported
"$dir/venv/bin/grpokit" info
"$dir/venv/bin/python" - <<'PY'
import numpy as np
import grpokit

assert grpokit.__file__.startswith(__import__("sys").prefix), grpokit.__file__  # the wheel, not the tree
rng = np.random.default_rng(0)
logp = -rng.random((4, 6))
old_logp = logp + 0.05 * rng.normal(size=(4, 6))
adv = grpokit.advantages(np.array([1.0, 0.0, 0.0, 1.0]), group_size=2)
res = grpokit.policy_loss(logp, old_logp, adv, np.ones((4, 6), bool), spec="trl.grpo")
# the unclipped per-sequence token mean over B (TRL's grpo at these small ratios): an independent value
want = -np.mean(np.mean(np.exp(logp - old_logp) * adv[:, None], axis=1))
assert abs(float(res.loss) - want) < 1e-12 and res.grad_logp.shape == (4, 6), (float(res.loss), want)
print(f"wheel {grpokit.__version__}: policy_loss(trl.grpo) = {float(res.loss):.6f} as expected")
PY
echo "wheel check passed: $(basename "$wheel")"
