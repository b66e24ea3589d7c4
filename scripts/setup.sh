#!/usr/bin/env bash
# One-shot, idempotent set-up on a fresh Debian 12 machine: packages, build, data, pretrained
# built-in models (only when missing). Safe to run again; each step skips what is already done.
#   --no-pretrain      stop before pretraining the built-in models (the tests never use them: they
#                      pretrain their own tiny model in seconds); the README's test command uses it
#   H2TUNE_BUILD_DIR   build directory (default: build)
#   H2TUNE_JOBS        parallel compile jobs (default: nproc)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PRETRAIN=1
for arg in "$@"; do
  case $arg in
    --no-pretrain) PRETRAIN=0 ;;
    *) echo "setup.sh: unknown option '$arg' (valid: --no-pretrain)" >&2; exit 2 ;;
  esac
done
BUILD_DIR=${H2TUNE_BUILD_DIR:-build}
JOBS=${H2TUNE_JOBS:-$(nproc)}
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
start=$(date +%s)

# ---------------------------------------------------------------- Debian packages
# libopenblas0-pthread takes over libblas.so.3: Debian's LibTorch calls the system BLAS and the
# reference BLAS is ~40x slower at matmul (4 vs 170 GFLOP/s for 2048^3 float32 here).
PACKAGES=(cmake g++ make git pkg-config ca-certificates
          libtorch-dev libopenblas0-pthread
          libopenmpi-dev openmpi-bin
          libhdf5-dev hdf5-tools
          libboost-program-options-dev libgtest-dev googletest nlohmann-json3-dev
          wordnet-base fortunes fortunes-min
          python3-h5py python3-numpy python3-matplotlib
          slurm-wlm munge
          clang-14 libclang-rt-14-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

# ---------------------------------------------------------------- build
log "building in $BUILD_DIR with $JOBS jobs"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"

# ---------------------------------------------------------------- data
log "preparing task data and pretraining corpus"
/usr/bin/python3 scripts/prepare_data.py

# ---------------------------------------------------------------- pretrained built-in models
if ((PRETRAIN)); then
  bash scripts/pretrain_models.sh "$BUILD_DIR"
else
  log "skipping the built-in models' pretraining (--no-pretrain)"
fi

log "set-up done in $(( $(date +%s) - start )) s"
