#!/usr/bin/env bash
# Submits slurm/h2tune_single_node.sbatch with the seconds-long 4-client smoke job on 2 ranks to the
# test cluster, waits for it and checks metrics.h5 with h5py. Also checks that the three templates
# parse and that every #SBATCH line of them is explained by a comment.
#   test_submit.sh H2TUNE MODEL_DIR WORK [LAUNCHER]     (LAUNCHER: default mpirun, or "srun --mpi=pmix")
set -uo pipefail
H2TUNE=$1 MODEL=$2 WORK=$3 LAUNCHER=${4:-mpirun}
TEST_NAME="test_submit ($LAUNCHER)"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cluster

for t in "$REPO"/slurm/h2tune_{single_node,multi_node,gpu}.sbatch; do
  [[ -f $t ]] || fail "missing template $t"
  bash -n "$t" || fail "$t: syntax error"
  grep -q -- '--signal=B:USR1@' "$t" && grep -q -- '--requeue' "$t" && grep -q -- '--open-mode=append' "$t" &&
    grep -q -- '%x_%j.out' "$t" || fail "$t: lacks --signal=B:USR1@, --requeue, --open-mode=append or %x_%j.out"
  awk -v f="$t" '/^#SBATCH/ && prev !~ /^# / && $0 !~ / # / { print f ": #SBATCH line without a comment: " $0; bad = 1 }
                 { prev = $0 } END { exit bad }' "$t" || fail "uncommented #SBATCH line"
done

rm -rf "$WORK" && mkdir -p "$WORK"
id=$(H2TUNE_JOB=jobs/smoke_federated.ini H2TUNE_OUTPUT="$WORK/run" H2TUNE_BIN="$H2TUNE" H2TUNE_LAUNCHER="$LAUNCHER" \
     sbatch --parsable --job-name=h2t-submit --ntasks=2 --chdir="$REPO" --output="$WORK/%x_%j.out" \
       "$REPO/slurm/h2tune_single_node.sbatch" --threads 1 --set "clients.model_dir=$MODEL") ||
  fail "sbatch refused the template"
id=${id%%;*}
say "submitted job $id"
state=$(wait_job "$id" 120)
log="$WORK/h2t-submit_$id.out"
show_log "$log"
[[ $state == COMPLETED ]] || fail "job $id ended as $state"
grep -q "starting jobs/smoke_federated.ini" "$log" || fail "the log does not show a fresh start"
grep -q "h2tune exited with 0" "$log" || fail "h2tune did not exit with 0"
grep -q "2 ranks" "$log" || fail "h2tune did not run on the 2 ranks of the allocation"
/usr/bin/python3 "$REPO/tests/check_metrics.py" "$WORK/run/metrics.h5" --clients 4 --rounds 2 --federated ||
  fail "metrics.h5 check failed"
say "OK"
