#!/usr/bin/env bash
# Prepare, HERE, what a GPU call carries: the face-crop bundle sized to what the call can still send, and the
# wheels of the one Python package the machine lacks (pydantic). Ends by adding up what the call would send.
#
#   bash gpu/prepare.sh                  # bundle of recipes/shipped/faclue.yaml's faces, as large as fits
#   BUNDLE_MIB=18 bash gpu/prepare.sh    # or a size of your choosing (QUALITY: JPEG quality, MAX_VAL_FACES)
#
# The call sends tracked files, untracked files git does not ignore, and the carried paths: 64 MiB in all. The
# tracked files alone are about 40 MiB (weights/), so the bundle gets what is left, less a safety margin.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PYTHON=${PYTHON:-.venv/bin/python}
SAFETY_MIB=${SAFETY_MIB:-0.75}   # for files others add to the working tree before the call
WHEELS=local/gpu-wheels
if [ ! -d "$WHEELS" ]; then
  # The machine's image has torch, timm, safetensors, PyYAML, rich... but no pydantic: Python 3.12, x86-64.
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
fi
if [ -z "${BUNDLE_MIB:-}" ]; then
  left=$(python3 gpu/travel_size.py --carry "$WHEELS" --headroom)
  BUNDLE_MIB=$(python3 -c "print(round($left - $SAFETY_MIB, 2))")
fi
echo "bundle budget: $BUNDLE_MIB MiB"
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 "$PYTHON" -m deepscan.train.bundle make recipes/shipped/faclue.yaml \
  -o local/gpu-bundle --max-mib "$BUNDLE_MIB" --max-val-faces "${MAX_VAL_FACES:-256}" --quality "${QUALITY:-95}"
python3 gpu/travel_size.py --carry local/gpu-bundle "$WHEELS"
