#!/usr/bin/env bash
# Runs the whole test suite (unit, cli, e2e, mpi, reference) with CTest. Run scripts/setup.sh
# first. The reference tests need transformers, PEFT, tokenizers and real tokenizer.json files:
# scripts/setup_reference.sh installs them (pinned) into build/refenv and build/refnpm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${H2TUNE_BUILD_DIR:-build}
# mpirun refuses root unless told; CI and containers run as root.
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
bash scripts/setup_reference.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${H2TUNE_TEST_JOBS:-2}" "$@"
