#!/usr/bin/env bash
# Resident memory of one rank hosting N clients of one base model, with the base shared
# (run.share_base_models = true, the default) and with one copy per client. Each run is one round
# of a generated job (task spam, rank 8 on all seven projections, 2 steps of batch 8 x 128, 8 test
# examples) in a process of its own; it reports the resident set once the clients are loaded (the
# line h2tune prints) and the peak after training (/usr/bin/time's maximum resident set size).
#   bench/shared_base_memory.sh MODEL_DIR "1 8 64" [BUILD_DIR]   (unshared runs only up to --max-unshared)
# Environment: MAX_UNSHARED (default 8): the largest N also run unshared; OUT (default bench/results).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model_dir=$1
counts=${2:-"1 8 64"}
build=${3:-build}
max_unshared=${MAX_UNSHARED:-8}
out=${OUT:-bench/results}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

make_job() {  # N -> job file
  local n=$1 job=$work/job_$1.ini
  {
    printf '[run]\nname = memory\nmethod = h2tune\nrounds = 1\nseed = 1\n'
    printf '[federation]\nmax_rank = 8\neval_examples = 8\neval_generate = false\ncheckpoint_every = 0\n'
    printf '[clients]\nmodel_dir = %s\ntask = spam\nrank = 8\nbatch_size = 8\nlocal_steps = 2\nmax_seq_len = 128\n' "$model_dir"
    for ((k = 0; k < n; ++k)); do printf '[client.%d]\nmodel = base\n' "$k"; done
  } > "$job"
  echo "$job"
}

printf '%-6s %-8s %14s %14s\n' clients shared "loaded MiB" "peak MiB" | tee "$out/shared_base_memory.txt"
for n in $counts; do
  for share in true false; do
    [[ $share == false && $n -gt $max_unshared ]] && continue
    log=$work/log_${n}_$share
    /usr/bin/time -f "maxrss %M" "$build/h2tune" train --config "$(make_job "$n")" --threads 1 --force \
        --set run.share_base_models=$share --output "$work/run_${n}_$share" > "$log" 2>&1 || { cat "$log"; exit 1; }
    loaded=$(sed -n 's/.*resident memory \([0-9]*\) MiB.*/\1/p' "$log")
    peak_kib=$(sed -n 's/^maxrss \([0-9]*\)/\1/p' "$log")
    printf '%-6s %-8s %14s %14s\n' "$n" "$share" "$loaded" "$((peak_kib / 1024))" | tee -a "$out/shared_base_memory.txt"
  done
done
