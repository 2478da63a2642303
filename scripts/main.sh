#!/usr/bin/env bash
# Set up (idempotent) and run the main job: every analysis on the embedded default model, figures into figures/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m analyses.main "$@"
