#!/usr/bin/env bash
# The preemption path end to end on the test cluster: slurm/h2tune_single_node.sbatch runs a longer
# tiny job (6 rounds of 16 steps, 4 clients on 2 ranks); once round 1 is logged the batch shell gets
# SIGUSR1 exactly as `#SBATCH --signal=B:USR1@...` delivers it (scancel --signal=USR1 --batch). The
# script's trap forwards it to mpirun, h2tune checkpoints and exits 3, the script requeues the job,
# and the requeued run resumes from the checkpoint. Checks: the job restarted once, resumed from a
# committed checkpoint, completed, and its metrics and adapters are bit-identical to an uninterrupted
# run of the same job (tests/resume/compare_runs.py).
#   test_preempt_requeue.sh H2TUNE MODEL_DIR WORK [LAUNCHER]
set -uo pipefail
H2TUNE=$1 MODEL=$2 WORK=$3 LAUNCHER=${4:-mpirun}
TEST_NAME="test_preempt_requeue ($LAUNCHER)"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_cluster
job=(--threads 1 --rounds 6 --set clients.local_steps=16 --set "clients.model_dir=$MODEL")
rm -rf "$WORK" && mkdir -p "$WORK"
cd "$REPO" || fail "no $REPO"

# The uninterrupted reference, outside SLURM, on as many ranks.
say "reference run"
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
timeout 180 mpirun --oversubscribe -np 2 "$H2TUNE" train --config jobs/smoke_federated.ini \
  --output "$WORK/reference" "${job[@]}" >"$WORK/reference.log" 2>&1 ||
  { cat "$WORK/reference.log"; fail "the reference run failed"; }

id=$(H2TUNE_JOB=jobs/smoke_federated.ini H2TUNE_OUTPUT="$WORK/run" H2TUNE_BIN="$H2TUNE" H2TUNE_LAUNCHER="$LAUNCHER" \
     sbatch --parsable --job-name=h2t-preempt --ntasks=2 --chdir="$REPO" --output="$WORK/%x_%j.out" \
       "$REPO/slurm/h2tune_single_node.sbatch" "${job[@]}") || fail "sbatch refused the template"
id=${id%%;*}
log="$WORK/h2t-preempt_$id.out"
say "submitted job $id"

# Signal the batch shell once the first round is done, well before the sixth.
for ((i = 0; i < 600; i++)); do
  grep -q "^round 1/6" "$log" 2>/dev/null && break
  st=$(job_field "$id" JobState)
  [[ $st == @(PENDING|CONFIGURING|RUNNING) ]] || { show_log "$log"; fail "job $id is '$st' before round 1 ended"; }
  sleep 0.2
done
grep -q "^round 1/6" "$log" || { scancel "$id"; show_log "$log"; fail "round 1 never ended"; }
grep -q "^round 6/6" "$log" && fail "the job ended before it could be signalled"
say "round 1 done; SIGUSR1 to the batch shell"
scancel --signal=USR1 --batch "$id" || fail "scancel --signal=USR1 --batch failed"

state=$(wait_job "$id" 150)
show_log "$log"
[[ $state == COMPLETED ]] || fail "job $id ended as $state"
restarts=$(job_field "$id" Restarts)
say "job $id: $state after $restarts restart(s)"
[[ $restarts == 1 ]] || fail "expected 1 restart (requeue), scontrol shows Restarts=$restarts"
grep -q "got SIGUSR1; forwarding" "$log" || fail "the batch shell's trap did not forward the signal"
grep -q "h2tune train: stopped by a signal" "$log" || fail "h2tune did not stop on the forwarded signal"
grep -q "h2tune exited with 3" "$log" || fail "the stopped run did not exit with 3"
grep -q "requeueing job $id" "$log" || fail "the script did not requeue the job"
grep -q "restart 1: resuming $WORK/run" "$log" || fail "the requeued run did not take the resume path"
grep -Eq "h2tune train: resuming .* from $WORK/run/checkpoints/r[0-9]+\.[0-9]+" "$log" ||
  fail "the requeued run did not resume from a checkpoint"
grep -q "h2tune exited with 0" "$log" || fail "the resumed run did not exit with 0"
/usr/bin/python3 "$REPO/tests/check_metrics.py" "$WORK/run/metrics.h5" --clients 4 --rounds 6 --federated ||
  fail "metrics.h5 check failed"
/usr/bin/python3 "$REPO/tests/resume/compare_runs.py" "$WORK/reference" "$WORK/run" ||
  fail "the requeued run differs from the uninterrupted one"
say "OK"
