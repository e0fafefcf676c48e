#!/usr/bin/env bash
# Prepare, HERE, what a GPU call carries: the face-crop bundle sized to what the call can still send, and the
# wheels of the one Python package the machine lacks (pydantic). Ends by adding up what the call would send.
#
#   bash gpu/prepare.sh                  # bundle of recipes/shipped/faclue.yaml's faces, as large as fits
#   BUNDLE_MIB=18 bash gpu/prepare.sh    # or a size of your choosing (QUALITY: JPEG quality, MAX_VAL_FACES)
#
# The call sends tracked files, untracked files git does not ignore, and the carried paths: 64 MiB in all. The
# shipped weights alone are about 70 MiB: put them aside first (bash gpu/weights-aside.sh aside; `back` after the
# call), and the bundle gets what is left, less a safety margin.
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
  # The bundle's budget counts its files' own sizes, the call their 4 KiB blocks: ~10 KiB JPEGs waste ~2 KiB each.
  BUNDLE_MIB=$(python3 -c "print(round(($left - $SAFETY_MIB) * 0.83, 2))")
  if python3 -c "import sys; sys.exit($BUNDLE_MIB > 1)"; then
    echo "only $BUNDLE_MIB MiB left for the bundle: put the shipped weights aside first (bash gpu/weights-aside.sh aside)" >&2
    exit 1
  fi
fi
echo "bundle budget: $BUNDLE_MIB MiB"
OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 nice -n 10 "$PYTHON" -m deepscan.train.bundle make recipes/shipped/faclue.yaml \
  -o local/gpu-bundle --max-mib "$BUNDLE_MIB" --max-val-faces "${MAX_VAL_FACES:-256}" --quality "${QUALITY:-95}"
python3 gpu/travel_size.py --carry local/gpu-bundle "$WHEELS"
