#!/usr/bin/env bash
# Trains the shared tokenizer and pretrains the built-in foundation models into data/models/,
# skipping anything already there. These are the exact commands that produce the defaults
# (docs/models.md records what they reached). Usage: scripts/pretrain_models.sh [BUILD_DIR]
#   H2TUNE_PRETRAIN_SCALE  multiplies every step count (e.g. 0.1 for a quick check; default 1)
#   H2TUNE_MODELS_DIR      where the models go (default data/models)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${1:-${H2TUNE_BUILD_DIR:-build}}
H2TUNE="$BUILD_DIR/h2tune"
SCALE=${H2TUNE_PRETRAIN_SCALE:-1}
MODELS=${H2TUNE_MODELS_DIR:-data/models}
CORPUS=data/corpus/pretrain.txt
HELDOUT=data/corpus/heldout.txt
log() { printf '[pretrain %(%H:%M:%S)T] %s\n' -1 "$*"; }

mkdir -p "$MODELS"
if [[ ! -s $MODELS/tokenizer.json ]]; then
  log "training the byte-level BPE tokenizer"
  "$H2TUNE" tokenizer --corpus "$CORPUS" --vocab-size 4096 --out "$MODELS/tokenizer.json"
fi

# name  steps  peak-lr   (batch 16 x 128 tokens; budgets sized so that the three take about 30
# minutes on 2 cores: h2-base's step costs about 3x h2-tiny's)
while read -r name steps lr; do
  [[ -z $name ]] && continue
  if [[ -s $MODELS/$name/model.safetensors && -s $MODELS/$name/config.json ]]; then
    log "$name present"
    continue
  fi
  steps=$(awk -v s="$steps" -v f="$SCALE" 'BEGIN { n = int(s * f); print (n < 1 ? 1 : n) }')
  log "pretraining $name for $steps steps"
  "$H2TUNE" pretrain --model "$name" --tokenizer "$MODELS/tokenizer.json" --corpus "$CORPUS" \
    --heldout "$HELDOUT" --out "$MODELS/$name" --steps "$steps" --lr "$lr" --batch-size 16 --seq-len 128 \
    --warmup 100 --seed 1234 --log-every 100
done <<'LIST'
h2-tiny  1400 2e-3
h2-small 1000 1.5e-3
h2-base  1100 1.2e-3
LIST
