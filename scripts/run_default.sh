#!/usr/bin/env bash
# Runs the embedded default job (jobs/default.ini) under mpirun, one rank per client, and prints
# the report. Run scripts/setup.sh first. Extra arguments go to `h2tune train`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${H2TUNE_BUILD_DIR:-build}
OUT=${H2TUNE_OUTPUT:-runs/default}
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun --oversubscribe -np 3 "$BUILD_DIR/h2tune" train --config jobs/default.ini --output "$OUT" --force "$@"
"$BUILD_DIR/h2tune" report "$OUT" --markdown "$OUT/report.md" --csv "$OUT/report.csv"
