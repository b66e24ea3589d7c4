#!/usr/bin/env bash
# Benchmark driver: runs methods x scenarios x seeds under mpirun, one output directory per run,
#   ROOT/<scenario>/<method>/seed<S>/
# then `h2tune report` over each scenario's runs (ROOT/<scenario>/report.{md,csv}, summary.csv)
# and scripts/plot_results.py (ROOT/plots/*.png).
#
# Resumable: a run whose metrics.h5 already has all its rounds, made by the same command and job
# file (ROOT/.../bench_cmd.txt), is skipped; an unfinished one continues from its last committed
# checkpoint (`h2tune train --resume`), or starts again when there is none.
#
#   bash bench/run_methods.sh                                   # the full benchmark (hours on 2 cores)
#   bash bench/run_methods.sh --quick --scenarios "hybrid ranks" --seeds "1 2"
#   bash bench/run_methods.sh --quick --methods "h2tune hetlora" --scenarios ranks \
#       --set clients.model_dir=build/tests/test_models/h2-tiny --rounds 2 --set clients.local_steps=2
#
# Options:
#   --methods "M ..."    methods (default: local h2tune fedit ffa fedsa hetlora flexlora flora;
#                        also h2tune-dense and the ablations h2tune-full-rank, -depth, -end, -joint)
#   --scenarios "S ..."  hybrid, model_het, ranks, scale (jobs/scenario_*.ini, jobs/scale.ini) or a
#                        path to any job file (its basename names the scenario); default: all four
#   --seeds "S ..."      seeds (default: 1 2 3)
#   --np N               MPI ranks for every scenario (default: hybrid 3, model_het 3, ranks 4,
#                        scale 3, other jobs min(clients, 3))
#   --threads T          intra-op threads per rank (default: h2tune's, cores / ranks)
#   --quick              a small budget: --rounds 3, clients.local_steps=10,
#                        federation.eval_examples=100 (recorded in ROOT/bench_info.txt and in
#                        every report; the default ROOT becomes runs/bench_quick)
#   --rounds N           rounds (overrides the job file and --quick)
#   --set KEY=VALUE      any job key for every run (repeatable; wins over --quick)
#   --root DIR           output root (default runs/bench, or runs/bench_quick with --quick)
#   --force              re-run runs that are already complete
#   --no-report          skip the reports;  --no-plot: skip the plots
#   --dry-run            print what would run and stop
# Environment: H2TUNE_BUILD_DIR (default build), MPIRUN (default mpirun).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUILD_DIR=${H2TUNE_BUILD_DIR:-build}
H2TUNE="$BUILD_DIR/h2tune"
MPIRUN=${MPIRUN:-mpirun}
METHODS="local h2tune fedit ffa fedsa hetlora flexlora flora"
SCENARIOS="hybrid model_het ranks scale"
SEEDS="1 2 3"
NP=""
THREADS=""
QUICK=0
ROUNDS=""
ROOT=""
FORCE=0
REPORT=1
PLOT=1
DRY=0
declare -a SET_KEYS=() SET_VALUES=()

set_override() {  # KEY VALUE: a later value for the same key replaces the earlier one
    local i
    for i in "${!SET_KEYS[@]}"; do
        if [[ ${SET_KEYS[$i]} == "$1" ]]; then SET_VALUES[$i]=$2; return; fi
    done
    SET_KEYS+=("$1"); SET_VALUES+=("$2")
}
die() { echo "run_methods.sh: $*" >&2; exit 2; }
need() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }

declare -a USER_SETS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --methods) need "$@"; METHODS=$2; shift 2 ;;
        --scenarios) need "$@"; SCENARIOS=$2; shift 2 ;;
        --seeds) need "$@"; SEEDS=$2; shift 2 ;;
        --np) need "$@"; NP=$2; shift 2 ;;
        --threads) need "$@"; THREADS=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --rounds) need "$@"; ROUNDS=$2; shift 2 ;;
        --set) need "$@"; [[ $2 == *=* ]] || die "--set expects KEY=VALUE, got '$2'"; USER_SETS+=("$2"); shift 2 ;;
        --root) need "$@"; ROOT=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        --no-report) REPORT=0; shift ;;
        --no-plot) PLOT=0; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[[ -x $H2TUNE ]] || die "$H2TUNE not found: build first (scripts/setup.sh or make -C $BUILD_DIR h2tune)"
if [[ $QUICK -eq 1 ]]; then
    [[ -n $ROUNDS ]] || ROUNDS=3
    set_override clients.local_steps 10
    set_override federation.eval_examples 100
fi
for s in ${USER_SETS[@]+"${USER_SETS[@]}"}; do set_override "${s%%=*}" "${s#*=}"; done
[[ -n $ROOT ]] || { [[ $QUICK -eq 1 ]] && ROOT=runs/bench_quick || ROOT=runs/bench; }
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

job_of() {  # scenario -> job file
    case $1 in
        hybrid|model_het|ranks) echo "jobs/scenario_$1.ini" ;;
        scale) echo "jobs/scale.ini" ;;
        *.ini) echo "$1" ;;
        *) die "unknown scenario '$1' (hybrid, model_het, ranks, scale or a job file)" ;;
    esac
}
name_of() { local b; b=$(basename "$1" .ini); echo "${b#scenario_}"; }
np_of() {
    if [[ -n $NP ]]; then echo "$NP"; return; fi
    case $1 in
        hybrid|model_het|scale) echo 3 ;;
        ranks) echo 4 ;;
        *) local k; k=$(grep -c '^\[client\.[0-9]*\]' "$(job_of "$1")" || true); echo $(( k < 3 ? (k < 1 ? 1 : k) : 3 )) ;;
    esac
}
fmt_secs() { local s=${1%.*}; printf '%dm%02ds' $((s / 60)) $((s % 60)); }
# Complete: `report --grouped` succeeds only for a run whose metrics.h5 has every planned round.
complete() { [[ -f $1/metrics.h5 ]] && "$H2TUNE" report "$1" --grouped >/dev/null 2>&1; }
has_checkpoint() { compgen -G "$1/checkpoints/*/COMMIT" >/dev/null; }

# Overrides shared by every run.
declare -a COMMON=()
[[ -n $ROUNDS ]] && COMMON+=(--rounds "$ROUNDS")
[[ -n $THREADS ]] && COMMON+=(--threads "$THREADS")
for i in "${!SET_KEYS[@]}"; do COMMON+=(--set "${SET_KEYS[$i]}=${SET_VALUES[$i]}"); done

for sc in $SCENARIOS; do job=$(job_of "$sc"); [[ -f $job ]] || die "$job: no such job file"; done
for m in $METHODS; do
    case $m in
        local|h2tune|h2tune-dense|fedit|ffa|fedsa|hetlora|flexlora|flora|h2tune-full-rank|h2tune-depth|h2tune-end|h2tune-joint) ;;
        *) die "unknown method '$m'" ;;
    esac
done

mode="full (the job files' budgets)"
[[ -n $ROUNDS || ${#SET_KEYS[@]} -gt 0 ]] && mode="custom (the job files with the overrides below)"
[[ $QUICK -eq 1 ]] && mode="quick (--rounds ${ROUNDS}, clients.local_steps and federation.eval_examples shrunk; not the job files' budgets)"
n_sc=$(wc -w <<<"$SCENARIOS"); n_m=$(wc -w <<<"$METHODS"); n_s=$(wc -w <<<"$SEEDS")
total=$((n_sc * n_m * n_s))
echo "run_methods.sh: $total runs ($n_sc scenarios x $n_m methods x $n_s seeds) -> $ROOT"
echo "  mode: $mode"
echo "  overrides: ${COMMON[*]:-(none)}"
if [[ $DRY -eq 0 ]]; then
    mkdir -p "$ROOT"
    {
        echo "== run_methods.sh invocation"
        echo "mode: $mode"
        echo "scenarios: $SCENARIOS"
        echo "methods: $METHODS"
        echo "seeds: $SEEDS"
        echo "overrides: ${COMMON[*]:-(none)}"
        echo "h2tune: $("$H2TUNE" --version 2>&1 | head -1)"
        echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (dirty)')"
        echo "host: $(hostname), $(nproc) cores"
        echo "started: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >> "$ROOT/bench_info.txt"
fi

i=0; ran=0; ran_secs=0; failed=()
bench_start=$(date +%s)
for sc in $SCENARIOS; do
    job=$(job_of "$sc"); name=$(name_of "$job"); np=$(np_of "$sc")
    job_sum=$(sha256sum "$job" | cut -c1-16)
    for m in $METHODS; do
        for seed in $SEEDS; do
            i=$((i + 1))
            out="$ROOT/$name/$m/seed$seed"
            args=(train --config "$job" --method "$m" --seed "$seed" --output "$out" ${COMMON[@]+"${COMMON[@]}"})
            cmd="np=$np job=$job sha=$job_sum ${args[*]}"
            tag="[$i/$total] $name / $m / seed $seed"
            if [[ $DRY -eq 1 ]]; then
                echo "$tag: $MPIRUN --oversubscribe -np $np $H2TUNE ${args[*]}"
                continue
            fi
            same_cmd=0
            [[ -f $out/bench_cmd.txt && $(cat "$out/bench_cmd.txt") == "$cmd" ]] && same_cmd=1
            if [[ $FORCE -eq 0 && $same_cmd -eq 1 ]] && complete "$out"; then
                echo "$tag: complete, skipped"
                continue
            fi
            run_args=("${args[@]}" --force)
            how="start"
            if [[ $FORCE -eq 0 && $same_cmd -eq 1 ]] && has_checkpoint "$out"; then
                run_args=(train --resume "$out")
                [[ -n $THREADS ]] && run_args+=(--threads "$THREADS")
                how="resume"
            fi
            mkdir -p "$out"
            echo "$cmd" > "$out/bench_cmd.txt"
            echo -n "$tag: $how on $np ranks ... "
            t0=$(date +%s.%N)
            rc=0
            [[ $how == start ]] && : > "$out/train.log"  # a resumed run keeps its log and appends
            "$MPIRUN" --oversubscribe -np "$np" "$H2TUNE" "${run_args[@]}" >> "$out/train.log" 2>&1 || rc=$?
            if [[ $rc -ne 0 && $how == resume ]]; then
                echo -n "resume failed (exit $rc), starting again ... "
                rc=0
                "$MPIRUN" --oversubscribe -np "$np" "$H2TUNE" "${args[@]}" --force >> "$out/train.log" 2>&1 || rc=$?
            fi
            secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
            echo "$secs" > "$out/bench_seconds.txt"
            ran=$((ran + 1)); ran_secs=$(awk -v a="$ran_secs" -v b="$secs" 'BEGIN { printf "%.1f", a + b }')
            left=$((total - i))
            eta=$(awk -v s="$ran_secs" -v n="$ran" -v l="$left" 'BEGIN { printf "%.0f", s / n * l }')
            if [[ $rc -eq 0 ]] && complete "$out"; then
                last=$(grep -E '^ *round [0-9]+/[0-9]+' "$out/train.log" | tail -1 | sed 's/^ *//' | cut -c1-90 || true)
                echo "done in $(fmt_secs "$secs") (${last}); about $(fmt_secs "$eta") left"
            else
                why="FAILED (exit $rc)"
                [[ $rc -eq 3 ]] && why="STOPPED by a signal after a checkpoint (exit 3; run again to resume)"
                echo "$why after $(fmt_secs "$secs"); log: $out/train.log"
                tail -3 "$out/train.log" | sed 's/^/    /'
                failed+=("$name/$m/seed$seed")
            fi
        done
    done
done
[[ $DRY -eq 1 ]] && exit 0
echo "run_methods.sh: $ran runs in $(fmt_secs $(( $(date +%s) - bench_start ))), ${#failed[@]} failed"
echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$ROOT/bench_info.txt"

if [[ $REPORT -eq 1 ]]; then
    for sc in $SCENARIOS; do
        name=$(name_of "$(job_of "$sc")"); dir="$ROOT/$name"
        [[ -d $dir ]] || continue
        {
            echo "# Benchmark report: scenario $name"
            echo
            echo "Mode of the last invocation: $mode. Settings of every invocation: $ROOT/bench_info.txt;"
            echo "each run's exact command: <run>/bench_cmd.txt."
            echo
            "$H2TUNE" report "$dir" --grouped --csv "$dir/report.csv" --summary-csv "$dir/summary.csv" |
                sed '1s/^# h2tune report: /All runs found under this directory: /'
        } > "$dir/report.md" || { echo "run_methods.sh: report for $name failed" >&2; failed+=("report:$name"); continue; }
        echo "== $name: $dir/report.md"
        sed -n '/^## Per scenario and method/,/^## Runs/p' "$dir/report.md" | sed '$d'
    done
fi
if [[ $PLOT -eq 1 ]]; then
    /usr/bin/python3 scripts/plot_results.py "$ROOT" --out "$ROOT/plots" || failed+=("plots")
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "run_methods.sh: failed: ${failed[*]}" >&2
    exit 1
fi
