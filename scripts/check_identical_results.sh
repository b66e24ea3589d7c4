#!/usr/bin/env bash
# Regression check for changes that must not change results: runs every method and ablation on
# the default job and the four scenario jobs, plus two variants of the default job (partial
# participation with Taylor-scored mask refresh every round; block masks, H2Tune methods only),
# for 2 rounds each, and fingerprints
# every metrics.h5 dataset and attribute (wall times and build identity left out) and every
# adapter file (scripts/fingerprint_runs.py).
#
#   bash scripts/check_identical_results.sh record DIR     # with the current build -> DIR/fingerprints.txt
#   bash scripts/check_identical_results.sh compare A B    # exit 0 when A and B are bit-identical
#
# Typical use: record with the build before a change, rebuild, record again, compare.
# The budget is kept small so that a record takes minutes (clients.local_steps=3,
# federation.eval_examples=16); the models are quick pretrainings (1 % of the built-in
# budgets) made once into --models DIR and reused, so both records run on the same weights.
# Options for record: --build DIR (default build), --models DIR (default build/identity_models),
#                     --methods "M ..." (default: every method), --jobs "J ..." (default: all)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
PY=/usr/bin/python3
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
MPIRUN=${MPIRUN:-mpirun}

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
MODE=$1; shift

if [[ $MODE == compare ]]; then
    [[ $# -eq 2 ]] || usage
    a=$1/fingerprints.txt b=$2/fingerprints.txt
    for f in "$a" "$b"; do [[ -s $f ]] || { echo "check_identical_results: $f missing or empty" >&2; exit 2; }; done
    if diff -u "$a" "$b" > "$2/fingerprints.diff"; then
        echo "identical: $(wc -l < "$a") fingerprints of $(cut -d' ' -f1 "$a" | cut -d/ -f1-2 | sort -u | wc -l) runs" \
             "(and their checkpoints' metrics.h5 copies)"
        exit 0
    fi
    echo "DIFFERENT: $(grep -c '^+[^+]' "$2/fingerprints.diff") of $(wc -l < "$a") fingerprints differ (see $2/fingerprints.diff):"
    grep '^+[^+]' "$2/fingerprints.diff" | head -20
    exit 1
fi
[[ $MODE == record && $# -ge 1 ]] || usage
OUT=$1; shift
BUILD=build MODELS=build/identity_models
METHODS="h2tune h2tune-dense h2tune-full-rank h2tune-depth h2tune-end h2tune-joint local fedit ffa fedsa hetlora flexlora flora"
JOBS="default scenario_hybrid scenario_model_het scenario_ranks scale refresh block"
while [[ $# -gt 0 ]]; do
    case $1 in
        --build) BUILD=$2; shift 2 ;;
        --models) MODELS=$2; shift 2 ;;
        --methods) METHODS=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        *) echo "check_identical_results: unknown option '$1'" >&2; exit 2 ;;
    esac
done
H2TUNE=$(realpath "$BUILD/h2tune")
mkdir -p "$OUT" "$MODELS"
OUT=$(realpath "$OUT") MODELS=$(realpath "$MODELS")

if [[ ! -s $MODELS/h2-base/model.safetensors ]]; then
    H2TUNE_MODELS_DIR=$MODELS H2TUNE_PRETRAIN_SCALE=0.01 bash scripts/pretrain_models.sh "$BUILD"
fi
# The jobs name data/tasks and data/models relative to the working directory.
WORK=$OUT/work
mkdir -p "$WORK/data"
ln -sfn "$REPO/data/tasks" "$WORK/data/tasks"
ln -sfn "$MODELS" "$WORK/data/models"

job_file() { case $1 in refresh|block) echo "$REPO/jobs/default.ini" ;; *) echo "$REPO/jobs/$1.ini" ;; esac; }
np_of() { case $1 in scenario_ranks) echo 4 ;; *) echo 3 ;; esac; }
extra_of() {
    case $1 in
        refresh) echo "--set federation.participation=0.67 --set federation.mask_refresh=1 --set federation.mask_score=taylor" ;;
        block) echo "--set federation.mask=block" ;;
    esac
}

cd "$WORK"
start=$SECONDS
for job in $JOBS; do
    for method in $METHODS; do
        [[ $job == block && $method != h2tune* ]] && continue  # masks are H2Tune's
        dir=runs/$job/$method
        rm -rf "$dir"; mkdir -p "$dir"
        rc=0  # word splitting of $(extra_of) is intended
        "$MPIRUN" --oversubscribe -np "$(np_of "$job")" "$H2TUNE" train --config "$(job_file "$job")" \
                --output "$dir" --method "$method" --rounds 2 --set clients.local_steps=3 \
                --set federation.eval_examples=16 $(extra_of "$job") > "$dir/train.log" 2>&1 || rc=$?
        if [[ $rc -ne 0 ]]; then
            echo "check_identical_results: $job/$method failed (exit $rc); see $WORK/$dir/train.log" >&2
            tail -5 "$dir/train.log" >&2
            exit 1
        fi
        echo "$job/$method done ($((SECONDS - start)) s)"
    done
done
"$PY" "$REPO/scripts/fingerprint_runs.py" runs > "$OUT/fingerprints.txt"
echo "recorded $(wc -l < "$OUT/fingerprints.txt") fingerprints of $(ls -d runs/*/* | wc -l) runs in $OUT/fingerprints.txt ($((SECONDS - start)) s)"
