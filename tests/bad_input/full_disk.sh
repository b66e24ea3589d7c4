#!/usr/bin/env bash
# A run whose output file system fills up mid-run: one error line naming the file HDF5 could not
# flush (and the space left), exit code 1, no crash at exit, and the checkpoint committed before
# the disk filled still resumable. Needs a small tmpfs: skipped (77) where mounting is not allowed.
#   full_disk.sh H2TUNE MODEL_DIR WORK_DIR
set -uo pipefail
H2TUNE=$1 MODEL=$2 WORK=$3
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
umount "$WORK/disk" 2>/dev/null; rm -rf "$WORK"; mkdir -p "$WORK/disk"
mount -t tmpfs -o size=300k h2tune_full_disk "$WORK/disk" 2>/dev/null || { echo "cannot mount a tmpfs here: skipped"; exit 77; }
trap 'umount "$WORK/disk"' EXIT
cat > "$WORK/job.ini" <<INI
[run]
method = local
rounds = 4
output = $WORK/disk/out
[federation]
max_rank = 8
modules = q,v
eval_examples = 4
eval_generate = false
checkpoint_every = 1
[clients]
batch_size = 4
local_steps = 1
max_seq_len = 64
[client.0]
model_dir = $MODEL
train_file = data/tasks/spam/train.jsonl
test_file = data/tasks/spam/test.jsonl
train_examples = 40
test_examples = 16
rank = 4
INI
err=$("$H2TUNE" train --config "$WORK/job.ini" --threads 1 2>&1 >/dev/null); rc=$?
echo "$err"
fail() { echo "FAIL: $*"; exit 1; }
[[ $rc -eq 1 ]] || fail "exit $rc, expected 1"
grep -q 'Segmentation\|signal' <<<"$err" && fail "crashed"
[[ $(grep -c 'error' <<<"$err") -eq 1 ]] || fail "expected one error line"
grep -Eq 'h2tune: error \(rank 0\): HDF5: cannot (flush|create|write).*disk/out/.*KiB free|No space left' <<<"$err" || fail "the error does not name the file"
ls "$WORK"/disk/out/checkpoints/*/COMMIT >/dev/null 2>&1 || fail "no committed checkpoint before the disk filled"
echo "full_disk: ok"
