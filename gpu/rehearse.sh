#!/usr/bin/env bash
# Rehearse gpu/run.sh HERE, on the CPU, before spending device time: the same script, recipes and bundle, with
# PyAV and MediaPipe made unimportable (gpu/no_media), a few steps of each detector at 64 px, then the returned
# files unpacked (gpu/unpack.sh) and each detector's shards loaded by `deepscan scan --weights INDEX`.
#
#   bash gpu/rehearse.sh                 # ralf, pel and mclcr, about 3 minutes on 2 busy cores
#   PARALLEL=1 bash gpu/rehearse.sh      # the same, all three at once (gpu/run.sh PARALLEL)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PYTHON=${PYTHON:-.venv/bin/python}
work=$(mktemp -d /tmp/deepscan-rehearsal.XXXXXX)
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
PYTHONPATH="$PWD/gpu/no_media" REHEARSAL=1 OUT="$work/out" RUNS="$work/runs" PYTHON="$PYTHON" \
  DEEPSCAN_SET="device=cpu input_size=64 batch_size=4 steps_per_epoch=2 epochs=2 num_workers=0 data.max_val_faces=16" \
  SET_ralf="detector.kwargs.image_size=64" SET_mclcr="detector.kwargs.image_size=64" \
  nice -n 10 bash gpu/run.sh ralf:0.5 pel:0.5 mclcr:rest
PYTHON="$PYTHON" bash gpu/unpack.sh "$work/out" "$work/unpacked"
"$PYTHON" -c "from PIL import Image; from deepscan.media.synthetic import portrait; Image.fromarray(portrait()).save('$work/face.png')"
for name in ralf pel mclcr; do
  nice -n 10 "$PYTHON" -m deepscan scan "$work/face.png" --method "$name" \
    --weights "$work/unpacked/$name/$name.safetensors.index.json" --json "$work/$name-scan.json" > /dev/null
  "$PYTHON" -c "import json; r = json.load(open('$work/$name-scan.json')); w = r['custody']['weights']; \
print('$name: scanned with', w['path'], 'trained', w['trained'])"
done
echo "rehearsal passed: $work"
