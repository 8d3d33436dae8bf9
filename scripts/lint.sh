#!/usr/bin/env bash
# Style checks for CI; changes nothing. Python: ruff's lint and format check ([tool.ruff] in
# pyproject.toml); C++/CUDA: clang-format (.clang-format). Needs ruff==0.17.6 and clang-format==23.1.5
# (pip). To apply the styles instead:
#   ruff check --fix . && ruff format . && git ls-files -z '*.cpp' '*.hpp' '*.cu' '*.cuh' '*.h' | xargs -0 clang-format -i
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
echo "== ruff check";        ruff check . || rc=1
echo "== ruff format --check"; ruff format --check . || rc=1
echo "== clang-format"
git ls-files -z '*.cpp' '*.hpp' '*.cu' '*.cuh' '*.h' | xargs -0 clang-format --dry-run -Werror || rc=1
[ $rc -eq 0 ] && echo "lint: clean" || echo "lint: see above (apply: the commands at the top of scripts/lint.sh)"
exit $rc
