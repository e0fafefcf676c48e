#!/usr/bin/env bash
# Train detectors from the face-crop bundle on the lent GPU machine, one after another, within one call's time.
#
#   bash gpu/run.sh ralf:2.5 pel:1.5 mclcr:rest   # NAME:MINUTES of training each, in this order; "rest": what
#                                                 # the call's deadline leaves once the earlier runs are done
#   PARALLEL=1 bash gpu/run.sh ralf:rest pel:rest mclcr:rest   # all at once, sharing the GPU and the CPUs
#
# Runs in the repository root (the device tool's working copy) with the bundle (local/gpu-bundle) and, where the
# machine lacks pydantic, its wheels (local/gpu-wheels) carried along. Installs nothing else: deepscan runs from
# the working copy (PYTHONPATH), on the machine's own torch and timm; neither PyAV nor MediaPipe is needed.
# Each detector trains under its own `timeout`, inside one deadline for the whole script (TOTAL_S), so that the
# call ends before the tool's 10-minute limit and what is done comes back. After each detector, $OUT holds:
#   <name>-0000k-of-0000n.safetensors   float16 weight shards (at most SHARD_MIB MiB each), straight in $OUT
#   runs.tar.gz                         per detector: the shard index, model card, metrics.jsonl, curves, log
# so that three detectors stay within the 8 files of 16 MiB that a call returns (gpu/unpack.sh puts them together).
#
# Rehearsal on a CPU (no GPU needed): REHEARSAL=1 OUT=/tmp/out DEEPSCAN_SET="input_size=64 ..." bash gpu/run.sh ...
# Environment: OUT (required); TOTAL_S (the whole script's deadline, default 570 s); OVERHEAD_S (start-up, last
# validation and writing per detector, kept inside its timeout beyond its training minutes; default 90 s);
# SHARD_MIB (15); RUNS (run folders, /tmp/deepscan-runs); PYTHON (python3); DEEPSCAN_SET (recipe overrides for
# every detector, space-separated KEY=VALUE); SET_<name> (for one detector); REHEARSAL (1: no GPU required);
# PARALLEL (1: start every detector at once; one after another, each pays its start-up and last validation in
# turn while the GPU idles; together they share the call's whole time: split the data workers among them with
# SET_<name>="num_workers=N").
set -uo pipefail
shopt -s nullglob
: "${OUT:?set OUT to the folder whose files come back}"
START=$(date +%s)
TOTAL_S=${TOTAL_S:-570}
OVERHEAD_S=${OVERHEAD_S:-90}
SHARD_MIB=${SHARD_MIB:-15}
RUNS=${RUNS:-/tmp/deepscan-runs}
PYTHON=${PYTHON:-python3}
BUNDLE=local/gpu-bundle
WHEELS=local/gpu-wheels
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT" "$RUNS"
log() { echo "[run.sh $(( $(date +%s) - START ))s] $*"; }

# pydantic (recipes) is the one dependency the machine's image lacks: install the carried wheels beside it.
if ! "$PYTHON" -c "import pydantic, sys; sys.exit(pydantic.VERSION[0] != '2')" 2>/dev/null; then
  [ -d "$WHEELS" ] || { log "no pydantic 2 here and no $WHEELS carried: gpu/prepare.sh fetches them"; exit 2; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || { log "installing the carried wheels failed"; exit 2; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

log "preflight"
"$PYTHON" - <<'EOF' || exit 2
import os, platform, sys, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs")
if torch.cuda.is_available():
    print(f"GPU {torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}")
elif os.environ.get("REHEARSAL") != "1":
    sys.exit("no CUDA GPU here (REHEARSAL=1 rehearses on the CPU)")
import timm, pydantic, safetensors, yaml, scipy, sklearn, matplotlib, rich  # noqa: F401  what training needs
import deepscan.detectors, deepscan.train.trainer, deepscan.train.bundle  # noqa: F401  and deepscan itself
missing = [name for name in ("av", "mediapipe") if name in sys.modules]
print("imports ok; PyAV/MediaPipe loaded:", missing or "none")
EOF
df -h /dev/shm 2>/dev/null | tail -1
# DataLoader workers hand batches over through /dev/shm: a small one (a container's 64 MiB) kills them.
shm_kib=$(df -k --output=avail /dev/shm 2>/dev/null | tail -1)
if [ "${REHEARSAL:-0}" != 1 ] && [ "${shm_kib:-0}" -lt 4000000 ] 2>/dev/null; then
  mount -o remount,size=16G /dev/shm 2>/dev/null && log "/dev/shm enlarged to 16G" || log "warning: /dev/shm is small"
fi
"$PYTHON" -m deepscan.train.bundle check "$BUNDLE" || exit 2

pack() {  # every finished run's small files into one archive; the shards stay files of their own
  local names=()
  for folder in "$RUNS"/*/; do
    local name; name=$(basename "$folder")
    [ -f "$RUNS/$name.log" ] && cp "$RUNS/$name.log" "$folder/train.log"
    names+=("$name")
  done
  [ ${#names[@]} -gt 0 ] && tar -czf "$OUT/runs.tar.gz" -C "$RUNS" \
    --exclude='*-of-*.safetensors' --exclude='checkpoint.pt' --exclude='best.safetensors' "${names[@]}"
}

train_one() {  # NAME MINUTES
  local name=$1 minutes=$2 run="$RUNS/$1"
  local left=$(( TOTAL_S - ($(date +%s) - START) - 15 ))
  [ "$minutes" = rest ] && minutes=$(( (left - OVERHEAD_S) / 60 + 1 ))
  if [ ! -f "recipes/gpu/$name.yaml" ] || ! [[ "$minutes" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    log "$name:$2: expected NAME:MINUTES with recipes/gpu/NAME.yaml"; return 2
  fi
  if [ "$left" -lt $(( OVERHEAD_S + 30 )) ]; then
    log "$name: skipped, only ${left}s left of the call's ${TOTAL_S}s"; return 1
  fi
  local want; want=$("$PYTHON" -c "print(int($minutes * 60 + $OVERHEAD_S))")
  local limit=$(( want < left ? want : left ))
  # The training budget leaves the overhead inside the timeout: the run ends itself, with its weights written.
  local budget; budget=$("$PYTHON" -c "print(max(0.01, round(min($minutes, ($limit - $OVERHEAD_S) / 60), 2)))")
  local extra=() var="SET_$name"
  for item in ${DEEPSCAN_SET:-} ${!var:-}; do extra+=(--set "$item"); done
  rm -rf "$run"
  log "$name: training for ${budget} min (timeout ${limit}s)"
  timeout --signal=TERM --kill-after=20 "$limit" "$PYTHON" -m deepscan train "recipes/gpu/$name.yaml" -o "$run" \
    --shard-mib "$SHARD_MIB" --set "max_minutes=$budget" "${extra[@]}" > "$RUNS/$name.log" 2>&1
  local status=$?
  tail -n 25 "$RUNS/$name.log"
  local index="$run/$name.safetensors.index.json"
  if [ ! -f "$index" ] && [ -f "$run/best.safetensors" ]; then
    log "$name: stopped before its end (exit $status): sharding its best checkpoint instead (no model card)"
    "$PYTHON" -m deepscan.weights split "$run/best.safetensors" "$index" --max-mib "$SHARD_MIB" --fp16
  fi
  if [ -f "$index" ] && "$PYTHON" -m deepscan.weights check "$index"; then
    cp "$run"/"$name"-*-of-*.safetensors "$OUT"/
  else
    log "$name: no weights (exit $status)"
  fi
  [ "${PARALLEL:-0}" = 1 ] || pack  # in parallel, once all are done: two tars must not write one archive
  return $status
}

failed=0
if [ "${PARALLEL:-0}" = 1 ]; then
  pids=()
  for item in "$@"; do
    train_one "${item%%:*}" "${item#*:}" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  pack
else
  for item in "$@"; do
    train_one "${item%%:*}" "${item#*:}" || failed=1
  done
fi
log "files to come back from $OUT:"
ls -l "$OUT"
count=$(find "$OUT" -maxdepth 1 -type f | wc -l)
[ "$count" -le 8 ] || log "warning: $count files in \$OUT, but a call returns at most 8"
find "$OUT" -maxdepth 1 -type f -size +16M -exec echo "warning: over 16 MiB, will not come back:" {} \;
exit $failed
