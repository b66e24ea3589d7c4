#!/usr/bin/env bash
# Table-driven bad input for `h2tune train`, end to end: malformed job files, impossible values,
# bad command lines, missing or malformed data files, model files that do not match their config,
# and resume mistakes. Every case must exit non-zero with the expected code, print one clear
# `error:` line that names the problem (and the key, file or line), and leave the output
# directory's earlier metrics.h5 byte-identical.
#   bad_inputs.sh H2TUNE MODEL_DIR WORK_DIR
set -uo pipefail
H2TUNE=$1 MODEL=$2 WORK=$3
rm -rf "$WORK"; mkdir -p "$WORK/data" "$WORK/out"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # repository root: jobs/ and data/ resolve from here

# ---------------------------------------------------------------- fixtures
printf 'precious results of an earlier run\n' > "$WORK/out/metrics.h5"
cp "$WORK/out/metrics.h5" "$WORK/metrics.orig"
head -n 40 data/tasks/spam/train.jsonl > "$WORK/data/train.jsonl"
head -n 16 data/tasks/spam/test.jsonl > "$WORK/data/test.jsonl"
good_job() {  # one local client on the tiny test model, seconds to run
  cat <<INI
[run]
method = local
rounds = 1
output = $WORK/out
[federation]
max_rank = 8
modules = q,v
eval_examples = 4
eval_generate = false
[clients]
batch_size = 4
local_steps = 1
max_seq_len = 64
[client.0]
model_dir = $MODEL
train_file = $WORK/data/train.jsonl
test_file = $WORK/data/test.jsonl
rank = 4
INI
}
job() {  # job NAME SED-EXPRESSION...: the good job edited
  local f="$WORK/$1.ini"; shift
  good_job > "$f"
  for e in "$@"; do sed -i "$e" "$f"; done
  echo "$f"
}
model_copy() {  # model_copy NAME: a writable copy of the test model
  rm -rf "$WORK/$1"; cp -r "$MODEL" "$WORK/$1"; echo "$WORK/$1"
}
{ sed -n 1,2p "$WORK/data/train.jsonl"; echo '{"instruction": "x", "input": "y", "output": '; } > "$WORK/data/truncated.jsonl"
{ sed -n 1,2p "$WORK/data/train.jsonl"; echo '{"instruction": "x", "input": "y"}'; } > "$WORK/data/no_output.jsonl"
: > "$WORK/data/empty.jsonl"
mkfifo "$WORK/fifo.ini"  # never opened for writing: reading it would block for ever
m=$(model_copy model_truncated); truncate -s 5000 "$m/model.safetensors"
m=$(model_copy model_wrong_width); sed -i 's/"intermediate_size": 384/"intermediate_size": 320/' "$m/config.json"
m=$(model_copy model_bad_json); echo '{"hidden_size": ' > "$m/config.json"
m=$(model_copy model_no_weights); rm "$m/model.safetensors"
m=$(model_copy model_small_vocab); sed -i 's/"vocab_size": 1024/"vocab_size": 512/' "$m/config.json"
m=$(model_copy model_gpt2); sed -i 's/"model_type": "llama"/"model_type": "gpt2"/' "$m/config.json"
m=$(model_copy model_yarn); sed -i 's/"rope_scaling": null/"rope_scaling": {"rope_type": "yarn", "factor": 4.0}/' "$m/config.json"
m=$(model_copy model_dtype_mismatch); sed -i 's/"torch_dtype": "float32"/"torch_dtype": "bfloat16"/' "$m/config.json"
m=$(model_copy model_tokenizer_unigram); sed -i '0,/"type": *"BPE"/s//"type": "Unigram"/' "$m/tokenizer.json"
# Sharded checkpoints whose index names a missing shard, or whose shards both hold every tensor.
shard_index() {  # shard_index DIR FIRST SECOND: every tensor in FIRST, the last one in SECOND
  /usr/bin/python3 - "$@" <<'PY'
import json, struct, sys
d, first, second = sys.argv[1:]
with open(f"{d}/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    names = sorted(k for k in json.loads(f.read(n)) if k != "__metadata__")
wm = {k: first for k in names}
wm[names[-1]] = second
json.dump({"metadata": {}, "weight_map": wm}, open(f"{d}/model.safetensors.index.json", "w"))
PY
}
m=$(model_copy model_missing_shard); mv "$m/model.safetensors" "$m/model-00001-of-00002.safetensors"
cp "$m/model-00001-of-00002.safetensors" "$m/model.safetensors"; shard_index "$m" model-00001-of-00002.safetensors model-00002-of-00002.safetensors; rm "$m/model.safetensors"
m=$(model_copy model_tensor_twice); cp "$m/model.safetensors" "$m/model-00001-of-00002.safetensors"
cp "$m/model.safetensors" "$m/model-00002-of-00002.safetensors"; shard_index "$m" model-00001-of-00002.safetensors model-00002-of-00002.safetensors; rm "$m/model.safetensors"

# ---------------------------------------------------------------- the table
# name | expected exit code | regex the error line must match | arguments after `train`
CASES=(
  "unknown key|2|unknown_key.ini:11: unknown key 'clients.colour'|--config $(job unknown_key '/^\[clients\]/a colour = blue') --force"
  "rank above R|2|client.0.rank.*exceeds federation.max_rank|--config $(job rank_above_r 's/^rank = 4/rank = 16/') --force"
  "zero clients|2|no clients|--config $(job zero_clients '/^\[client.0\]/,$d') --force"
  "negative learning rate|2|lr|--config $(job negative_lr '/^\[clients\]/a lr = -1e-3') --force"
  "zero rounds|2|rounds|--config $(job zero_rounds 's/^rounds = 1/rounds = 0/') --force"
  "non-numeric value|2|batch_size.*'four'|--config $(job non_numeric 's/^batch_size = 4/batch_size = four/') --force"
  "malformed section header|2|bad_section.ini:10: malformed section header|--config $(job bad_section 's/^\[clients\]/[clients/') --force"
  "line without =|2|no_equals.ini:6: expected 'key = value'|--config $(job no_equals 's/^max_rank = 8/max_rank 8/') --force"
  "duplicate key|2|duplicate key 'run.rounds'|--config $(job duplicate_key '/^rounds = 1/a rounds = 2') --force"
  "unknown method|2|method|--config $(job unknown_method 's/^method = local/method = fedprox/') --force"
  "mask refresh with block masks|2|mask_refresh.*topk|--config $(job refresh_block '/^\[federation\]/a mask = block' '/^\[federation\]/a mask_refresh = 1') --force"
  "shard index not below the count|2|client.0.shard.*0 <= K < N, got '3/3'|--config $(job bad_shard '/^rank = 4/a shard = 3/3') --force"
  "a client over several ranks|2|client.0.ranks_per_client.*not implemented|--config $(job multi_rank '/^rank = 4/a ranks_per_client = 2') --force"
  "participation above 1|2|participation|--config $(job participation '/^\[federation\]/a participation = 1.5') --force"
  "missing job file|2|$WORK/nope.ini: cannot open job file|--config $WORK/nope.ini --force"
  "job file that is a FIFO|2|fifo.ini: not a regular file|--config $WORK/fifo.ini --force"
  "/dev/zero as the job file|2|/dev/zero: not a regular file|--config /dev/zero --force"
  "a directory as the job file|2|$WORK: is a directory, not a job file|--config $WORK --force"
  "--set without =|2|--set expects key=value|--config $(job set_ok) --set clients.lr --force"
  "--set unknown key|2|command line: unknown key 'clients.colour'|--config $(job set_ok2) --set clients.colour=blue --force"
  "--set a client that does not exist|2|no \\[client.5\\]|--config $(job set_ok3) --set client.5.rank=2 --force"
  "missing training file|2|nope.jsonl|--config $(job missing_train "s#train.jsonl#nope.jsonl#") --force"
  "truncated JSON line|2|truncated.jsonl:3|--config $(job truncated_jsonl "s#train.jsonl#truncated.jsonl#") --force"
  "record without output|2|no_output.jsonl:3.*output|--config $(job no_output "s#train.jsonl#no_output.jsonl#") --force"
  "empty training file|2|empty.jsonl|--config $(job empty_train "s#train.jsonl#empty.jsonl#") --force"
  "model directory without a model|1|no pretrained model|--config $(job no_model "s#model_dir = .*#model_dir = $WORK/nowhere#") --force"
  "truncated safetensors|1|model.safetensors|--config $(job truncated_model "s#model_dir = .*#model_dir = $WORK/model_truncated#") --force"
  "weights that do not match config.json|1|model.safetensors.*mlp|--config $(job wrong_width "s#model_dir = .*#model_dir = $WORK/model_wrong_width#") --force"
  "malformed config.json|1|config.json|--config $(job bad_json "s#model_dir = .*#model_dir = $WORK/model_bad_json#") --force"
  "config.json without weights|1|model.safetensors|--config $(job no_weights "s#model_dir = .*#model_dir = $WORK/model_no_weights#") --force"
  "vocab_size below the special tokens|1|config.json.*vocab_size|--config $(job small_vocab "s#model_dir = .*#model_dir = $WORK/model_small_vocab#") --force"
  "unknown model_type|1|config.json: llama config: model_type 'gpt2' is not supported|--config $(job gpt2 "s#model_dir = .*#model_dir = $WORK/model_gpt2#") --force"
  "a family feature h2tune lacks|1|config.json: .*rope_scaling.rope_type 'yarn' is not supported|--config $(job yarn "s#model_dir = .*#model_dir = $WORK/model_yarn#") --force"
  "tensors in another dtype than config.json|1|model.safetensors: tensor .* is F32 but .*config.json says torch_dtype \"bfloat16\"|--config $(job dtype_mismatch "s#model_dir = .*#model_dir = $WORK/model_dtype_mismatch#") --force"
  "shard index naming a missing file|1|model.safetensors.index.json: weight_map names shard 'model-00002-of-00002.safetensors', which does not exist|--config $(job missing_shard "s#model_dir = .*#model_dir = $WORK/model_missing_shard#") --force"
  "a tensor in two shards|1|model-0000[12]-of-00002.safetensors: tensor .* also appears in|--config $(job tensor_twice "s#model_dir = .*#model_dir = $WORK/model_tensor_twice#") --force"
  "float16 base on the CPU|2|client.0.model_dtype: float16 needs a CUDA device|--config $(job fp16_cpu '/^rank = 4/a model_dtype = float16') --force"
  "unknown model_dtype|2|model_dtype|--config $(job bad_dtype '/^rank = 4/a model_dtype = int8') --force"
  "tokenizer.json with an unknown model type|1|tokenizer.json.*model.type.*Unigram|--config $(job tok_unigram "s#model_dir = .*#model_dir = $WORK/model_tokenizer_unigram#") --force"
  "existing metrics.h5 without --force|2|already exists|--config $(job no_force)"
  "--resume a directory without checkpoints|2|no committed checkpoint|--resume $WORK/out --config $(job resume_none)"
  "--resume and --output disagree|2|--output and --resume|--resume $WORK/out --output $WORK/elsewhere --config $(job resume_output)"
)

failures=0
for row in "${CASES[@]}"; do
  IFS='|' read -r name want pattern args <<<"$row"
  # shellcheck disable=SC2086
  err=$("$H2TUNE" train $args --threads 1 2>&1 >/dev/null); rc=$?
  line=$(grep -m1 'error' <<<"$err")
  problems=()
  [[ $rc -eq $want ]] || problems+=("exit $rc, expected $want")
  grep -Eq -- "$pattern" <<<"$line" || problems+=("error line does not match /$pattern/")
  cmp -s "$WORK/out/metrics.h5" "$WORK/metrics.orig" || problems+=("metrics.h5 was modified")
  if ((${#problems[@]})); then
    failures=$((failures + 1))
    printf 'FAIL  %-45s %s\n      got: %s\n' "$name" "${problems[*]}" "${err:0:400}"
    cp "$WORK/metrics.orig" "$WORK/out/metrics.h5"
  else
    printf 'ok    %-45s %s\n' "$name" "$line"
  fi
done
echo "bad_inputs: ${#CASES[@]} cases, $failures failed"
((failures == 0))
