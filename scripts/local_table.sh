#!/usr/bin/env bash
# The `local` method for every built-in size x task (docs/models.md), two runs at a time with one
# thread each, then the table. Usage: scripts/local_table.sh [OUT_DIR]   (default runs/local_table)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${H2TUNE_BUILD_DIR:-build}
OUT=${1:-runs/local_table}
SIZES=${H2TUNE_SIZES:-"h2-tiny h2-small h2-base"}
TASKS=${H2TUNE_TASKS:-"spam wordnet sotu fortune"}
mkdir -p "$OUT"
pids=()
for size in $SIZES; do
  for task in $TASKS; do
    "$BUILD_DIR/h2tune" train --config jobs/local_single.ini --threads 1 --force \
      --set client.0.model="$size" --set client.0.task="$task" --output "$OUT/$size-$task" \
      > "$OUT/$size-$task.log" 2>&1 &
    pids+=($!)
    if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
done
for p in "${pids[@]}"; do wait "$p"; done
/usr/bin/python3 scripts/local_table.py "$OUT" | tee "$OUT/table.md"
