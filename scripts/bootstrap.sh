#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv at .venv and installs the package into it.
#   bash scripts/bootstrap.sh           runtime only
#   bash scripts/bootstrap.sh test      runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
extra=""
[ "${1:-}" = "test" ] && extra="[test,train,fmri]"  # the tests train tiny models (torch, CPU wheel) and read NIfTI/CIFTI
.venv/bin/python -m pip install -q -e ".${extra}"
