#!/usr/bin/env bash
# `h2tune export` on bad input: each case must exit with the expected code and print one error
# line that names the option or file at fault.
#   export_errors.sh H2TUNE SMOKE_RUN_DIR WORK_DIR
set -uo pipefail
H2TUNE=$1 RUN=$2 WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK"

# A run directory without its adapters (as a stopped run leaves it), and one that claims FLoRA.
mkdir -p "$WORK/no_adapters" && cp "$RUN/job.ini" "$WORK/no_adapters/"
mkdir -p "$WORK/flora" && cp -r "$RUN/job.ini" "$RUN/adapters" "$WORK/flora/"
sed -i '/^\[run\]/,/^\[/ s/^method = .*/method = flora/' "$WORK/flora/job.ini"
grep -q '^method = flora$' "$WORK/flora/job.ini" || { echo "FAIL: could not set run.method in $WORK/flora/job.ini"; exit 1; }
mkdir -p "$WORK/empty_dir"
model_dir_of() {  # model_dir_of JOB_INI K: client K's model_dir in a resolved job file
  awk -v want="[client.$2]" '/^\[/ { in_client = ($0 == want) } in_client && /^model_dir = / { print $3 }' "$1"
}

# name | exit code | regex for the error line | arguments after `export`
CASES=(
"client_out_of_range|2|--client 2: out of range; the run in .* has 2 clients \(0\.\.1, .*job\.ini\)|--run $RUN --client 2 --out $WORK/out"
"client_negative|2|--client -1: out of range|--run $RUN --client=-1 --out $WORK/out"
"missing_run_dir|2|--run $WORK/no_such_run: no such directory|--run $WORK/no_such_run --client 0 --out $WORK/out"
"not_a_run_dir|2|--run $WORK/empty_dir: neither job.ini nor metrics.h5 found|--run $WORK/empty_dir --client 0 --out $WORK/out"
"no_adapter_file|1|no_adapters/adapters/client_0.safetensors: no adapter file for client.0|--run $WORK/no_adapters --client 0 --out $WORK/out"
"flora_needs_merged|2|used method 'flora', which merges .* export it with --merged|--run $WORK/flora --client 0 --out $WORK/out"
"flora_merged_needs_checkpoint|1|flora/checkpoints: no committed checkpoint|--run $WORK/flora --client 0 --out $WORK/out --merged"
"missing_option|2|the option '--client' is required|--run $RUN --out $WORK/out"
"out_is_base|2|--out .*: is the client's base model directory|--run $RUN --client 0 --out @BASE@"
)
base=$(model_dir_of "$RUN/job.ini" 0)
failed=0
for c in "${CASES[@]}"; do
  IFS='|' read -r name code regex argv <<<"$c"
  argv=${argv//@BASE@/$base}
  # shellcheck disable=SC2086
  err=$("$H2TUNE" export $argv 2>&1 >/dev/null); rc=$?
  lines=$(grep -c 'error' <<<"$err")
  if [[ $rc -ne $code ]] || ! grep -Eq -- "$regex" <<<"$err" || [[ $lines -ne 1 ]]; then
    echo "FAIL $name: exit $rc (want $code), error lines $lines: $err"
    failed=$((failed + 1))
  else
    echo "ok   $name: $err"
  fi
done
echo "${#CASES[@]} cases, $failed failed"
[[ $failed -eq 0 ]]
