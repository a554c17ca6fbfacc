#!/usr/bin/env bash
# One command for a newcomer: install everything, then play the demo (a real EEG recording through the pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/brainharmonic demo "$@"
