#!/usr/bin/env bash
# Put a GPU call's returned files back together: one run folder per detector, shards beside their index.
#
#   bash gpu/unpack.sh FILES_AT DEST      # FILES_AT: the folder the device tool copied $OUT into (read-only)
#
# Then, per detector: deepscan scan FACE.jpg --method ralf --weights DEST/ralf/ralf.safetensors.index.json
set -euo pipefail
files=${1:?the folder holding the returned files}
dest=${2:?where the run folders go}
mkdir -p "$dest"
tar -xzf "$files/runs.tar.gz" -C "$dest"
for shard in "$files"/*-of-*.safetensors; do
  [ -e "$shard" ] || continue
  name=$(basename "$shard"); name=${name%%-0*}
  mkdir -p "$dest/$name"
  cp "$shard" "$dest/$name/"
done
for index in "$dest"/*/*.safetensors.index.json; do
  [ -e "$index" ] || continue
  "${PYTHON:-.venv/bin/python}" -m deepscan.weights check "$index"
done
