#!/usr/bin/env bash
# Run after the 15-minute training command in docs/training.md (paths under /work/mnist-run).
# FID/KID of the 15-minute MNIST run's checkpoints (G_ema, BatchNorm recalibrated as in training)
set -e
H=/work/venv/bin/hitgan
$H stats mnist -o /work/mnist-run/mnist2k.npz --resolution 32 --max-images 2000 --no-progress
for s in 00000100 00000300 00000500 00000700 00000900 00001103; do
  $H eval --model /work/mnist-run/run/checkpoints/step-$s --reference /work/mnist-run/mnist2k.npz \
    --metrics fid,kid -n 1000 --metrics-file /work/mnist-run/curve.jsonl --batch 100
done
