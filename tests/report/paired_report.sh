#!/usr/bin/env bash
# `h2tune report --compare A,B`: two methods over the same two seeds give a paired row per client
# and for the client mean, with the seed count and a 95 % interval; a third seed that only one
# method ran is not paired.
#   paired_report.sh H2TUNE MODEL_DIR WORK_DIR
set -uo pipefail
H2TUNE=$1 MODEL=$2 WORK=$3
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
rm -rf "$WORK"
train() {  # train METHOD SEED
  "${MPIEXEC:-mpirun}" --oversubscribe -np 3 "$H2TUNE" train --config jobs/smoke_federated.ini --rounds 1 --threads 1 \
    --set "clients.model_dir=$MODEL" --method "$1" --seed "$2" --output "$WORK/$1_$2" >/dev/null || exit 1
}
train local 1; train local 2; train local 3; train fedit 1; train fedit 2
out=$("$H2TUNE" report "$WORK" --compare fedit,local) || exit 1
echo "$out" | sed -n '/Paired/,$p'
num='[+-][0-9]+\.[0-9]{3}'
for client in 'mean of clients' '0 h2-tiny/spam' '3 h2-tiny/sotu'; do
  grep -Eq "^\| smoke-federated \| fedit - local \| $client \| 2 \| $num \| \[$num, $num\] \| " <<<"$out" ||
    { echo "paired_report: no paired row for '$client' over 2 seeds"; exit 1; }
done
bad=$("$H2TUNE" report "$WORK" --compare fedit 2>&1); rc=$?
[[ $rc -eq 2 ]] && grep -q "report: --compare expects A,B" <<<"$bad" ||
  { echo "paired_report: a malformed --compare is not named (exit $rc): $bad"; exit 1; }
echo "paired_report: ok"
