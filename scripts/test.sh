#!/usr/bin/env bash
# One command for a newcomer and for CI: install everything, lint, type-check, run the full test suite.
# Fails on any failing test, and also when no test ran (pytest exit 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
.venv/bin/ruff check brainharmonic_rt tests benchmarks scripts
.venv/bin/ruff format --check brainharmonic_rt tests benchmarks scripts
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/python -m pytest -p no:cacheprovider -rs "$@"
