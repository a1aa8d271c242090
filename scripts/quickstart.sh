#!/usr/bin/env bash
# Set up, then run the main job on the built-in default: the cost model of the tiny preset and a
# grid of samples from it (randomly initialised until a trained checkpoint is given with --model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hitgan info --preset hit-tiny-32
.venv/bin/hitgan generate --preset hit-tiny-32 --seeds 0-63 --out out/quickstart
