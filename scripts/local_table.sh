#!/usr/bin/env bash
# The `local` method for every built-in size x task x seed (docs/models.md), two runs at a time
# with one thread each, then the table (mean and spread over seeds).
# Usage: scripts/local_table.sh [OUT_DIR]   (default runs/local_table)
# Environment: H2TUNE_SIZES, H2TUNE_TASKS, H2TUNE_SEEDS (default "1234 1 2"), H2TUNE_BUILD_DIR.
# A finished run is skipped, so an interrupted table continues.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${H2TUNE_BUILD_DIR:-build}
OUT=${1:-runs/local_table}
SIZES=${H2TUNE_SIZES:-"h2-tiny h2-small h2-base"}
TASKS=${H2TUNE_TASKS:-"spam wordnet sotu fortune"}
SEEDS=${H2TUNE_SEEDS:-"1234 1 2"}
mkdir -p "$OUT"
pids=()
for seed in $SEEDS; do
  for size in $SIZES; do
    for task in $TASKS; do
      run="$OUT/$size-$task-seed$seed"
      [[ -f "$run/.complete" ]] && continue   # written when the run finished
      ( "$BUILD_DIR/h2tune" train --config jobs/local_single.ini --threads 1 --force --seed "$seed" \
          --set client.0.model="$size" --set client.0.task="$task" --output "$run" > "$run.log" 2>&1 \
        && touch "$run/.complete" ) &
      pids+=($!)
      if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    done
  done
done
for p in "${pids[@]}"; do wait "$p"; done
/usr/bin/python3 scripts/local_table.py "$OUT" | tee "$OUT/table.md"
