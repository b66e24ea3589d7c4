# Shared helpers of the SLURM tests; sourced. Needs the cluster of slurm_cluster.sh running.
# Arguments the tests receive: H2TUNE (the executable), MODEL_DIR (tiny test model), WORK (scratch).
SLURM_TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SLURM_TEST_DIR/../.." && pwd)
eval "$(bash "$SLURM_TEST_DIR/slurm_cluster.sh" env)"
export SLURM_CONF

fail() { echo "${TEST_NAME:-slurm test}: FAIL: $*"; exit 1; }
say() { printf '[%s %(%H:%M:%S)T] %s\n' "${TEST_NAME:-slurm test}" -1 "$*"; }

# The cluster must answer; a missing slurm-wlm/munge is a failure, never a skip.
require_cluster() {
  command -v sbatch >/dev/null 2>&1 ||
    fail "sbatch not found: install Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge)"
  [[ -f $SLURM_CONF ]] && timeout 20 scontrol ping >/dev/null 2>&1 ||
    fail "no SLURM controller answers at $SLURM_CONF (tests/slurm/slurm_cluster.sh start)"
}

# job_field JOBID FIELD: one Key=Value field of `scontrol show job` (empty once the job is gone).
job_field() { scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }

# wait_job JOBID TIMEOUT_S: waits until the job reached a final state; prints that state.
wait_job() {
  local id=$1 limit=$2 start state
  start=$(date +%s)
  while :; do
    state=$(job_field "$id" JobState)
    case $state in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
        echo "$state"; return 0 ;;
      "") echo "GONE"; return 0 ;;
    esac
    if (( $(date +%s) - start > limit )); then
      scancel "$id" 2>/dev/null
      echo "TIMEOUT_WAITING($state)"; return 1
    fi
    sleep 1
  done
}

show_log() { echo "----- $1"; cat "$1" 2>/dev/null || echo "(no log)"; echo "-----"; }
