#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang++-14, ASan + UBSan) into build/fuzz and runs
# one target or all of them for a bounded time (docs/fuzzing.md).
#
#   scripts/run_fuzzers.sh [TARGET|all] [SECONDS] [extra libFuzzer options...]
#   scripts/run_fuzzers.sh --build          # configure and build only
#   scripts/run_fuzzers.sh --list           # the target names
#
# SECONDS (default 60) is each target's -max_total_time. The seed corpus tests/fuzz/corpus/TARGET
# is copied into build/fuzz/corpus/TARGET, which the run extends, so the repository is never
# written. Exit status: 0 clean, 1 a finding (the input is left under build/fuzz/findings/), 2
# usage or build failure, 77 skipped (no clang++-14 or no libFuzzer runtime).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${H2TUNE_FUZZ_BUILD:-$ROOT/build/fuzz}
SRC=$ROOT/tests/fuzz
TARGETS=(job_config jsonl task_info safetensors tokenizer llama_config commit round_messages)
JOBS=${H2TUNE_FUZZ_BUILD_JOBS:-2}

usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

if [[ ${1:-} == --list ]]; then printf '%s\n' "${TARGETS[@]}"; exit 0; fi
[[ ${1:-} == -h || ${1:-} == --help ]] && usage

CXX=$(command -v clang++-14 || true)
if [[ -z $CXX ]]; then
  echo "run_fuzzers: SKIPPED: clang++-14 is not installed (apt-get install clang-14 libclang-rt-14-dev)"
  exit 77
fi
if ! compgen -G "/usr/lib/llvm-14/lib/clang/14*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null; then
  echo "run_fuzzers: SKIPPED: the libFuzzer runtime of clang 14 is missing (apt-get install libclang-rt-14-dev)"
  exit 77
fi

build() {
  if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S "$SRC" -B "$BUILD" -DCMAKE_CXX_COMPILER="$CXX" >"$BUILD.configure.log" 2>&1 ||
      { cat "$BUILD.configure.log"; echo "run_fuzzers: configuring $BUILD failed"; exit 2; }
  fi
  echo "run_fuzzers: building $BUILD (log $BUILD.build.log)"
  cmake --build "$BUILD" -j"$JOBS" "$@" >"$BUILD.build.log" 2>&1 ||
    { tail -40 "$BUILD.build.log"; echo "run_fuzzers: building $BUILD failed"; exit 2; }
}

if [[ ${1:-} == --build ]]; then
  mkdir -p "$(dirname "$BUILD")"
  build
  exit 0
fi

WHICH=${1:-all}
SECONDS_EACH=${2:-60}
shift $(($# < 2 ? $# : 2))
[[ $SECONDS_EACH =~ ^[0-9]+$ ]] || usage
if [[ $WHICH == all ]]; then
  selected=("${TARGETS[@]}")
elif printf '%s\n' "${TARGETS[@]}" | grep -qx -- "$WHICH"; then
  selected=("$WHICH")
else
  echo "run_fuzzers: unknown target '$WHICH' (one of: ${TARGETS[*]}, all)"
  exit 2
fi

mkdir -p "$(dirname "$BUILD")"
build_args=()
for t in "${selected[@]}"; do build_args+=(--target "fuzz_$t"); done
build "${build_args[@]}"

# Sanitizer reports end the run (a finding); leaks are findings too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

findings=0
summary=()
for t in "${selected[@]}"; do
  corpus=$BUILD/corpus/$t
  mkdir -p "$corpus" "$BUILD/findings"
  [[ -d $SRC/corpus/$t ]] && cp -n "$SRC/corpus/$t/"* "$corpus/" 2>/dev/null
  dict=()
  if [[ -f $SRC/$t.dict ]]; then dict=(-dict="$SRC/$t.dict"); elif [[ $t != round_messages && $t != commit ]]; then dict=(-dict="$SRC/json.dict"); fi
  log=$BUILD/fuzz_$t.log
  echo "== fuzz_$t: ${SECONDS_EACH}s, corpus $corpus"
  "$BUILD/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$BUILD/findings/$t-" "${dict[@]}" "$@" "$corpus" >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  cov=$(grep -Eo '(cov|ft): [0-9]+' "$log" | tail -2 | tr '\n' ' ')
  secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 | grep -o 'in [0-9]*' | grep -o '[0-9]*')
  if ((rc != 0)); then
    findings=$((findings + 1))
    echo "FINDING in fuzz_$t (exit $rc); log $log"
    grep -E 'FINDING|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error|SUMMARY|Test unit written|terminate called' "$log" | head -12
    summary+=("$(printf '%-16s FINDING  executions %s  %s' "$t" "${runs:-?}" "$cov")")
  else
    summary+=("$(printf '%-16s clean    executions %s in %ss  %s corpus %s files' "$t" "${runs:-?}" "${secs:-?}" "$cov" "$(ls "$corpus" | wc -l)")")
  fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
if ((findings)); then
  echo "run_fuzzers: $findings target(s) with findings; inputs under $BUILD/findings/ (reproduce: $BUILD/fuzz_TARGET FILE)"
  exit 1
fi
exit 0
