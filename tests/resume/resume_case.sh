#!/usr/bin/env bash
# One kill-and-resume scenario, compared bit for bit with an uninterrupted run of the same job.
#   resume_case.sh CASE H2TUNE MODEL_DIR REFERENCE_DIR WORK_DIR
# The job: jobs/smoke_federated.ini, 3 rounds of 2 steps, 4 clients on 3 ranks, 1 thread each,
# method $H2TUNE_METHOD (default h2tune). H2TUNE_RESUME_NP (default 3) ranks, plus the options in
# H2TUNE_RESUME_EXTRA (e.g. clients spanning several ranks; the reference must be run with them).
set -uo pipefail
CASE=$1 H2TUNE=$2 MODEL=$3 REFERENCE=$4 WORK=$5
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MPIRUN=${MPIEXEC:-mpirun}
NP=${H2TUNE_RESUME_NP:-3}
read -ra EXTRA <<< "${H2TUNE_RESUME_EXTRA:-}"
run() { timeout 240 "$MPIRUN" --oversubscribe -np "$NP" "$H2TUNE" train "$@" --threads 1; }
job=(--config jobs/smoke_federated.ini --rounds 3 --set "clients.model_dir=$MODEL" --method "${H2TUNE_METHOD:-h2tune}" "${EXTRA[@]}")
fail() { echo "resume_case $CASE: $*"; exit 1; }
expect_rc() {  # expect_rc WANT GOT WHAT
  [[ $2 -eq $1 ]] || fail "$3 exited with $2, expected $1"
}
nonzero_rc() { [[ $1 -ne 0 ]] || fail "$2 should have failed"; }
rm -rf "$WORK"

case $CASE in
  signal_mid_round)  # SIGUSR1 after step 1 of round 2 on client 1: checkpoint inside the round
    H2TUNE_RAISE_SIGNAL=USR1:1:1:1 run "${job[@]}" --output "$WORK"; expect_rc 3 $? "the signalled run"
    [[ -f $WORK/checkpoints/r000001.1/COMMIT ]] || fail "no in-round checkpoint r000001.1"
    run --resume "$WORK"; expect_rc 0 $? "the resumed run" ;;
  interrupt_mid_round)  # SIGINT (Ctrl-C) after step 1 of round 2 on client 0: as SIGUSR1, on rank 0
    H2TUNE_RAISE_SIGNAL=INT:0:1:1 run "${job[@]}" --output "$WORK"; expect_rc 3 $? "the interrupted run"
    [[ -f $WORK/checkpoints/r000001.1/COMMIT ]] || fail "no in-round checkpoint r000001.1"
    run --resume "$WORK"; expect_rc 0 $? "the resumed run" ;;
  term_at_round_end)  # SIGTERM after the last step of round 2: the round completes, then checkpoint
    H2TUNE_RAISE_SIGNAL=TERM:2:1:2 run "${job[@]}" --output "$WORK"; expect_rc 3 $? "the signalled run"
    [[ -f $WORK/checkpoints/r000002.0/COMMIT ]] || fail "no checkpoint after round 2"
    run --resume "$WORK"; expect_rc 0 $? "the resumed run" ;;
  kill_rank)  # SIGKILL on the rank of client 2 in round 3: the job fails fast, resume redoes round 3
    start=$(date +%s)
    H2TUNE_RAISE_SIGNAL=KILL:2:2:1 run "${job[@]}" --output "$WORK"; rc=$?
    nonzero_rc $rc "the killed run"; [[ $rc -ne 124 ]] || fail "the killed run hung until the timeout"
    echo "killed run ended with $rc after $(( $(date +%s) - start )) s"
    run --resume "$WORK"; expect_rc 0 $? "the resumed run" ;;
  kill_in_checkpoint)  # rank 0 dies after every file of checkpoint r000002.0 but before its COMMIT
    H2TUNE_KILL_BEFORE_COMMIT=2 run "${job[@]}" --output "$WORK"; nonzero_rc $? "the killed run"
    [[ -d $WORK/checkpoints/r000002.0 && ! -f $WORK/checkpoints/r000002.0/COMMIT ]] ||
      fail "expected an uncommitted r000002.0"
    out=$(run --resume "$WORK"); rc=$?; echo "$out"; expect_rc 0 $rc "the resumed run"
    grep -q "from $WORK/checkpoints/r000001.0" <<<"$out" || fail "did not resume from the committed r000001.0" ;;
  corrupt_checkpoint)  # the newest checkpoint's client file is cut short: the previous one is used
    H2TUNE_RAISE_SIGNAL=USR1:0:2:1 run "${job[@]}" --output "$WORK"; expect_rc 3 $? "the signalled run"
    f=$WORK/checkpoints/r000002.1/client_0001.h5
    [[ -f $f ]] || fail "missing $f"
    truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"
    out=$(run --resume "$WORK"); rc=$?; echo "$out"; expect_rc 0 $rc "the resumed run"
    grep -q "skipping checkpoint .*r000002.1.*COMMIT recorded" <<<"$out" || fail "the truncated checkpoint was not reported"
    grep -q "from $WORK/checkpoints/r000002.0" <<<"$out" || fail "did not fall back to r000002.0" ;;
  corrupt_metrics)  # metrics.h5 overwritten with garbage between the stop and the resume
    H2TUNE_RAISE_SIGNAL=USR1:3:1:1 run "${job[@]}" --output "$WORK"; expect_rc 3 $? "the signalled run"
    head -c 4096 /dev/urandom > "$WORK/metrics.h5"
    run --resume "$WORK"; expect_rc 0 $? "the resumed run" ;;
  usr1_to_mpirun)  # SIGUSR1 sent to mpirun itself once round 1 is reported: mpirun forwards it, exit 3
    # mpirun itself in the background (not under `timeout`, which would take the signal).
    "$MPIRUN" --oversubscribe -np "$NP" "$H2TUNE" train "${job[@]}" --output "$WORK" --threads 1 > "$WORK.log" 2>&1 & pid=$!
    for _ in $(seq 1 1200); do grep -q 'round 1/3' "$WORK.log" 2>/dev/null || ! kill -0 "$pid" 2>/dev/null && break; sleep 0.1; done
    kill -USR1 "$pid"; wait "$pid"; rc=$?; cat "$WORK.log"
    expect_rc 3 $rc "mpirun, signalled with SIGUSR1,"
    run --resume "$WORK"; expect_rc 0 $? "the resumed run" ;;
  incompatible_config)  # resuming with a different alpha is refused and names the key
    H2TUNE_RAISE_SIGNAL=USR1:1:1:1 run "${job[@]}" --output "$WORK"; expect_rc 3 $? "the signalled run"
    cp "$WORK/metrics.h5" "$WORK/metrics.before"
    out=$(run --resume "$WORK" --set federation.alpha=8 2>&1); rc=$?; echo "$out"
    nonzero_rc $rc "resume with a changed alpha"
    grep -q "federation.alpha (checkpoint: 16, now: 8)" <<<"$out" || fail "the differing key is not named"
    cmp -s "$WORK/metrics.h5" "$WORK/metrics.before" || fail "the refused resume touched metrics.h5"
    exit 0 ;;
  *) fail "unknown case" ;;
esac
/usr/bin/python3 "$HERE/compare_runs.py" "$REFERENCE" "$WORK" || fail "differs from the uninterrupted run"
echo "resume_case $CASE: OK"
