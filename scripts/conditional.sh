#!/usr/bin/env bash
# Class-conditional hit-tiny-32 on the built-in MNIST digits with their labels: train for MINUTES
# of CPU time on one thread (`python -m bench.quality.conditional`, which then scores the run: a
# small classifier trained on the real digits classifies PER_CLASS generated digits of each class),
# then a class-by-seed grid, one row per digit, with `hitgan generate --class all`.
# Environment: MINUTES (20), PER_CLASS (1000), EPOCHS (4, of the classifier), RUN
# (runs/cond-mnist), OUT (out/cond-mnist), SET (training options, e.g. d_mbstd=true).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/cond-mnist}
OUT=${OUT:-out/cond-mnist}
OMP_NUM_THREADS=1 .venv/bin/python -m bench.quality.conditional --data mnist --preset hit-tiny-32 \
    --minutes "${MINUTES:-20}" --out "$RUN" --per-class "${PER_CLASS:-1000}" --epochs "${EPOCHS:-4}" \
    --set "${SET:-}"
.venv/bin/hitgan generate --model "$RUN" --class all --seeds 0-7 --out "$OUT"
