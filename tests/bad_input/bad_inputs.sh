#!/usr/bin/env bash
# Table-driven bad input for `h2tune train` (and `tokenizer`, `report`), end to end: malformed job
# files, impossible values, bad command lines, missing, malformed or hostile data files (FIFOs,
# /dev/zero), model files that do not match their config or hold NaN, label sets that do not fit
# the data, resume mistakes and tampered checkpoints, unusable output directories. Every case must
# exit non-zero with the expected code, print one clear `error:` line that names the problem (and
# the key, file or line), and leave every earlier metrics.h5 under WORK_DIR byte-identical.
#   bad_inputs.sh H2TUNE MODEL_DIR WORK_DIR [MARKDOWN]
# With MARKDOWN, the results are also written there as a table (docs/reliability.md holds one).
set -uo pipefail
H2TUNE=$1 MODEL=$2 WORK=$3 MARKDOWN=${4:-}
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

# Hostile files: FIFOs (never opened for writing: reading one would block for ever), /dev/zero.
mkfifo "$WORK/data/fifo.jsonl" "$WORK/fifo_corpus.txt"
: > "$WORK/empty_corpus.txt"
printf '\n\n  \n\n' > "$WORK/blank_corpus.txt"
# Label sets that do not fit the data, and a task.json that lists a label twice.
{ head -n 3 "$WORK/data/test.jsonl"; echo '{"instruction": "Is this email spam or ham?", "input": "x", "output": "eggs"}'; } > "$WORK/data/test_outside.jsonl"
mkdir -p "$WORK/task_dup"; printf '{"name": "spam", "instruction": "Spam?", "labels": ["spam", "ham", "spam"]}\n' > "$WORK/task_dup/task.json"
# Models whose config.json cannot describe their weights, or whose weights are not numbers.
m=$(model_copy model_hidden_1e9); sed -i 's/"hidden_size": 128/"hidden_size": 1000000000/' "$m/config.json"
m=$(model_copy model_vocab_1e9); sed -i 's/"vocab_size": 1024/"vocab_size": 1000000000/' "$m/config.json"
m=$(model_copy model_hidden_1e30); sed -i 's/"hidden_size": 128/"hidden_size": 1e30/' "$m/config.json"
m=$(model_copy model_layers); sed -i 's/"num_hidden_layers": 4/"num_hidden_layers": 1000/' "$m/config.json"
m=$(model_copy model_fifo_tokenizer); rm "$m/tokenizer.json"; mkfifo "$m/tokenizer.json"
m=$(model_copy model_fifo_config); rm "$m/config.json"; mkfifo "$m/config.json"
poison() {  # poison DIR TENSOR VALUE COUNT: overwrite the first COUNT float32 values of TENSOR
  /usr/bin/python3 - "$@" <<'PY'
import json, struct, sys
d, name, value, count = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
path = f"{d}/model.safetensors"
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    entry = json.loads(f.read(n))[name]
    begin, end = entry["data_offsets"]
    count = (end - begin) // 4 if count <= 0 else count
    f.seek(8 + n + begin)
    f.write(struct.pack(f"<{count}f", *([value] * count)))
PY
}
m=$(model_copy model_nan); poison "$m" model.norm.weight nan 0
m=$(model_copy model_inf); poison "$m" model.layers.1.mlp.down_proj.weight inf 1
# Runs to resume: two rounds with a checkpoint after each, then their checkpoints tampered with,
# their round count lowered, or their base model's weights replaced.
resume_run() {  # resume_run NAME MODEL_DIR: a finished two-round run in WORK/NAME
  good_job | sed -e "s#^output = .*#output = $WORK/$1#" -e 's/^rounds = 1/rounds = 2/' \
                 -e '/^\[federation\]/a checkpoint_every = 1' -e "s#^model_dir = .*#model_dir = $2#" > "$WORK/$1.ini"
  "$H2TUNE" train --config "$WORK/$1.ini" --threads 1 >/dev/null 2>&1 || echo "fixture run $1 failed" >&2
}
resume_run run_base "$MODEL"
resume_run run_weights "$(model_copy model_swapped)"
poison "$WORK/model_swapped" model.layers.0.self_attn.q_proj.weight 0.5 4
for name in run_negative run_ahead run_short; do cp -r "$WORK/run_base" "$WORK/$name"; done
sed -i 's/^next_round .*/next_round -3/' "$WORK"/run_negative/checkpoints/*/COMMIT
sed -i 's/^next_round .*/next_round 7/' "$WORK"/run_ahead/checkpoints/*/COMMIT
# Metrics files h2tune did not write: a table of the wrong shape, a FIFO.
mkdir -p "$WORK/report_shape" "$WORK/report_fifo" "$WORK/out_fifo"
cp "$WORK/run_base/metrics.h5" "$WORK/report_shape/metrics.h5"
/usr/bin/python3 - "$WORK/report_shape/metrics.h5" <<'PY'
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    del f["/metrics/test_accuracy"]
    f["/metrics/test_accuracy"] = np.zeros((1000000, 1))
PY
mkfifo "$WORK/report_fifo/metrics.h5" "$WORK/out_fifo/metrics.h5"

# ---------------------------------------------------------------- the table
# name | expected exit code | regex the error line must match | arguments after `train`
CASES=(
  "unknown key|2|unknown_key.ini:11: unknown key 'clients.colour'|train --config $(job unknown_key '/^\[clients\]/a colour = blue') --force --threads 1"
  "rank above R|2|client.0.rank.*exceeds federation.max_rank|train --config $(job rank_above_r 's/^rank = 4/rank = 16/') --force --threads 1"
  "zero clients|2|no clients|train --config $(job zero_clients '/^\[client.0\]/,$d') --force --threads 1"
  "negative learning rate|2|lr|train --config $(job negative_lr '/^\[clients\]/a lr = -1e-3') --force --threads 1"
  "zero rounds|2|rounds|train --config $(job zero_rounds 's/^rounds = 1/rounds = 0/') --force --threads 1"
  "non-numeric value|2|batch_size.*'four'|train --config $(job non_numeric 's/^batch_size = 4/batch_size = four/') --force --threads 1"
  "malformed section header|2|bad_section.ini:10: malformed section header|train --config $(job bad_section 's/^\[clients\]/[clients/') --force --threads 1"
  "line without =|2|no_equals.ini:6: expected 'key = value'|train --config $(job no_equals 's/^max_rank = 8/max_rank 8/') --force --threads 1"
  "duplicate key|2|duplicate key 'run.rounds'|train --config $(job duplicate_key '/^rounds = 1/a rounds = 2') --force --threads 1"
  "unknown method|2|method|train --config $(job unknown_method 's/^method = local/method = fedprox/') --force --threads 1"
  "mask refresh with block masks|2|mask_refresh.*topk|train --config $(job refresh_block '/^\[federation\]/a mask = block' '/^\[federation\]/a mask_refresh = 1') --force --threads 1"
  "shard index not below the count|2|client.0.shard.*0 <= K < N, got '3/3'|train --config $(job bad_shard '/^rank = 4/a shard = 3/3') --force --threads 1"
  "a client over more ranks than the run has|2|client.0.ranks_per_client.*add up to [0-9]+ ranks but the run has 1|train --config $(job multi_rank '/^rank = 4/a ranks_per_client = 2') --force --threads 1"
  "participation above 1|2|participation|train --config $(job participation '/^\[federation\]/a participation = 1.5') --force --threads 1"
  "missing job file|2|$WORK/nope.ini: cannot open job file|train --config $WORK/nope.ini --force --threads 1"
  "job file that is a FIFO|2|fifo.ini: not a regular file|train --config $WORK/fifo.ini --force --threads 1"
  "/dev/zero as the job file|2|/dev/zero: not a regular file|train --config /dev/zero --force --threads 1"
  "a directory as the job file|2|$WORK: is a directory, not a job file|train --config $WORK --force --threads 1"
  "--set without =|2|--set expects key=value|train --config $(job set_ok) --set clients.lr --force --threads 1"
  "--set unknown key|2|command line: unknown key 'clients.colour'|train --config $(job set_ok2) --set clients.colour=blue --force --threads 1"
  "--set a client that does not exist|2|no \\[client.5\\]|train --config $(job set_ok3) --set client.5.rank=2 --force --threads 1"
  "missing training file|2|nope.jsonl|train --config $(job missing_train "s#train.jsonl#nope.jsonl#") --force --threads 1"
  "truncated JSON line|2|truncated.jsonl:3|train --config $(job truncated_jsonl "s#train.jsonl#truncated.jsonl#") --force --threads 1"
  "record without output|2|no_output.jsonl:3.*output|train --config $(job no_output "s#train.jsonl#no_output.jsonl#") --force --threads 1"
  "empty training file|2|empty.jsonl|train --config $(job empty_train "s#train.jsonl#empty.jsonl#") --force --threads 1"
  "model directory without a model|1|no pretrained model|train --config $(job no_model "s#model_dir = .*#model_dir = $WORK/nowhere#") --force --threads 1"
  "truncated safetensors|1|model.safetensors|train --config $(job truncated_model "s#model_dir = .*#model_dir = $WORK/model_truncated#") --force --threads 1"
  "weights that do not match config.json|1|config.json: intermediate_size, hidden_size imply \[320, 128\] for tensor 'model.layers.0.mlp.gate_proj.weight' but .*model.safetensors holds \[384, 128\]|train --config $(job wrong_width "s#model_dir = .*#model_dir = $WORK/model_wrong_width#") --force --threads 1"
  "malformed config.json|1|config.json|train --config $(job bad_json "s#model_dir = .*#model_dir = $WORK/model_bad_json#") --force --threads 1"
  "config.json without weights|1|model.safetensors|train --config $(job no_weights "s#model_dir = .*#model_dir = $WORK/model_no_weights#") --force --threads 1"
  "vocab_size below the special tokens|1|config.json.*vocab_size|train --config $(job small_vocab "s#model_dir = .*#model_dir = $WORK/model_small_vocab#") --force --threads 1"
  "unknown model_type|1|config.json: llama config: model_type 'gpt2' is not supported|train --config $(job gpt2 "s#model_dir = .*#model_dir = $WORK/model_gpt2#") --force --threads 1"
  "a family feature h2tune lacks|1|config.json: .*rope_scaling.rope_type 'yarn' is not supported|train --config $(job yarn "s#model_dir = .*#model_dir = $WORK/model_yarn#") --force --threads 1"
  "tensors in another dtype than config.json|1|model.safetensors: tensor .* is F32 but .*config.json says torch_dtype \"bfloat16\"|train --config $(job dtype_mismatch "s#model_dir = .*#model_dir = $WORK/model_dtype_mismatch#") --force --threads 1"
  "shard index naming a missing file|1|model.safetensors.index.json: weight_map names shard 'model-00002-of-00002.safetensors', which does not exist|train --config $(job missing_shard "s#model_dir = .*#model_dir = $WORK/model_missing_shard#") --force --threads 1"
  "a tensor in two shards|1|model-0000[12]-of-00002.safetensors: tensor .* also appears in|train --config $(job tensor_twice "s#model_dir = .*#model_dir = $WORK/model_tensor_twice#") --force --threads 1"
  "float16 base on the CPU|2|client.0.model_dtype: float16 needs a CUDA device|train --config $(job fp16_cpu '/^rank = 4/a model_dtype = float16') --force --threads 1"
  "unknown model_dtype|2|model_dtype|train --config $(job bad_dtype '/^rank = 4/a model_dtype = int8') --force --threads 1"
  "tokenizer.json with an unknown model type|1|tokenizer.json.*model.type.*Unigram|train --config $(job tok_unigram "s#model_dir = .*#model_dir = $WORK/model_tokenizer_unigram#") --force --threads 1"
  "existing metrics.h5 without --force|2|already exists|train --config $(job no_force) --threads 1"
  "--resume a directory without checkpoints|2|no committed checkpoint|train --resume $WORK/out --config $(job resume_none) --threads 1"
  "--resume and --output disagree|2|--output and --resume|train --resume $WORK/out --output $WORK/elsewhere --config $(job resume_output) --threads 1"
  "train_file that is a FIFO|2|fifo.jsonl: not a regular file|train --config $(job fifo_train "s#train.jsonl#fifo.jsonl#") --force --threads 1"
  "/dev/zero as train_file|2|/dev/zero: not a regular file|train --config $(job zero_train "s#$WORK/data/train.jsonl#/dev/zero#") --force --threads 1"
  "test_file that is a FIFO|2|fifo.jsonl: not a regular file|train --config $(job fifo_test "s#test.jsonl#fifo.jsonl#") --force --threads 1"
  "hidden_size 1e9 on a 128-wide model|1|config.json.*hidden_size|train --config $(job hidden_1e9 "s#model_dir = .*#model_dir = $WORK/model_hidden_1e9#") --force --threads 1"
  "vocab_size 1e9|1|config.json.*vocab_size|train --config $(job vocab_1e9 "s#model_dir = .*#model_dir = $WORK/model_vocab_1e9#") --force --threads 1"
  "hidden_size 1e30|1|config.json.*hidden_size.*1e\+?30|train --config $(job hidden_1e30 "s#model_dir = .*#model_dir = $WORK/model_hidden_1e30#") --force --threads 1"
  "num_hidden_layers above the weights'|1|config.json: num_hidden_layers is 1000 but the weights hold 4 layers|train --config $(job layers "s#model_dir = .*#model_dir = $WORK/model_layers#") --force --threads 1"
  "an all-NaN tensor|1|model.safetensors: tensor 'model.norm.weight' holds 128 of 128 values that are NaN or infinite|train --config $(job nan "s#model_dir = .*#model_dir = $WORK/model_nan#") --force --threads 1"
  "one infinite weight|1|tensor 'model.layers.1.mlp.down_proj.weight' holds 1 of .* NaN or infinite|train --config $(job inf "s#model_dir = .*#model_dir = $WORK/model_inf#") --force --threads 1"
  "tokenizer.json that is a FIFO|1|tokenizer.json: not a regular file|train --config $(job fifo_tokenizer "s#model_dir = .*#model_dir = $WORK/model_fifo_tokenizer#") --force --threads 1"
  "config.json that is a FIFO|1|config.json: not a regular file|train --config $(job fifo_config "s#model_dir = .*#model_dir = $WORK/model_fifo_config#") --force --threads 1"
  "test output outside the label set|2|test_outside.jsonl:4: output 'eggs' is not in the label set \(client.0.labels: spam, ham\)|train --config $(job outside "s#test.jsonl#test_outside.jsonl#" '/^rank = 4/a labels = spam, ham') --force --threads 1"
  "labels that lack a training label|2|train.jsonl:[0-9]+: output 'ham' is not in the label set|train --config $(job lacking '/^rank = 4/a labels = spam') --force --threads 1"
  "a label listed twice|2|client.0.labels: label 'spam' is listed twice|train --config $(job twice '/^rank = 4/a labels = spam, ham, spam') --force --threads 1"
  "task.json listing a label twice|2|task.json.*spam|train --config $(job task_twice "/^rank = 4/a task = $WORK/task_dup") --force --threads 1"
  "max_seq_len above max_position_embeddings|2|client.0.max_seq_len: 4096 exceeds max_position_embeddings 1024 of .*config.json|train --config $(job long_seq 's/^max_seq_len = 64/max_seq_len = 4096/') --force --threads 1"
  "COMMIT edited to a negative round|2|run_negative/checkpoints: no committed checkpoint.*COMMIT:[0-9]+: bad next_round '-3'|train --resume $WORK/run_negative --threads 1"
  "COMMIT ahead of its metrics|2|run_ahead/checkpoints: no committed checkpoint.*next_round 7 but its metrics.h5 holds [0-9]+ rounds|train --resume $WORK/run_ahead --threads 1"
  "--resume --rounds below the rounds done|2|run.rounds: 1 is below the 2 rounds the checkpoint .* has done|train --resume $WORK/run_short --rounds 1 --threads 1"
  "base weights replaced before --resume|2|client.0.model_dir .*model_swapped: model.safetensors: size:checksum .* was trained on another base model|train --resume $WORK/run_weights --threads 1"
  "--output on a read-only file system|1|run.output /proc/h2tune_out: cannot create the directory|train --config $(job proc_out) --output /proc/h2tune_out --force --threads 1"
  "--output naming a file|2|run.output .*train.jsonl: exists and is not a directory|train --config $(job file_out) --output $WORK/data/train.jsonl --force --threads 1"
  "metrics.h5 that is a FIFO, with --force|1|out_fifo/metrics.h5: not a regular file|train --config $(job fifo_metrics) --output $WORK/out_fifo --force --threads 1"
  "report on a table of a foreign shape|2|report_shape/metrics.h5:/metrics/test_accuracy has shape \[1000000, 1\], expected \[2, 1\]|report $WORK/report_shape/metrics.h5"
  "report on a FIFO|1|report_fifo/metrics.h5: not a regular file|report $WORK/report_fifo/metrics.h5"
  "tokenizer on an empty corpus|2|empty_corpus.txt: no text to learn merges from|tokenizer --corpus $WORK/empty_corpus.txt --out $WORK/tok.json"
  "tokenizer on blank lines only|2|blank_corpus.txt: no text to learn merges from|tokenizer --corpus $WORK/blank_corpus.txt --out $WORK/tok.json"
  "tokenizer on /dev/zero|2|/dev/zero: not a regular file|tokenizer --corpus /dev/zero --out $WORK/tok.json"
  "tokenizer on a FIFO|2|fifo_corpus.txt: not a regular file|tokenizer --corpus $WORK/fifo_corpus.txt --out $WORK/tok.json"
)

metrics_sums() { find "$WORK" -name metrics.h5 -type f -print0 | sort -z | xargs -0 md5sum; }
sums_before=$(metrics_sums)
failures=0
[[ -n $MARKDOWN ]] && printf '| case | exit | error line |\n|---|---|---|\n' > "$MARKDOWN"
for row in "${CASES[@]}"; do
  IFS='|' read -r name want pattern args <<<"$row"
  # shellcheck disable=SC2086
  err=$(timeout 120 "$H2TUNE" $args 2>&1 >/dev/null); rc=$?
  line=$(grep -m1 'error' <<<"$err")
  problems=()
  [[ $rc -eq $want ]] || problems+=("exit $rc, expected $want")
  grep -Eq -- "$pattern" <<<"$line" || problems+=("error line does not match /$pattern/")
  [[ $(metrics_sums) == "$sums_before" ]] || problems+=("an earlier metrics.h5 was modified")
  if ((${#problems[@]})); then
    failures=$((failures + 1))
    printf 'FAIL  %-45s %s\n      got: %s\n' "$name" "${problems[*]}" "${err:0:400}"
    cp "$WORK/metrics.orig" "$WORK/out/metrics.h5"
    sums_before=$(metrics_sums)
  else
    printf 'ok    %-45s %s\n' "$name" "$line"
  fi
  if [[ -n $MARKDOWN ]]; then
    shown=${line//$WORK/WORK}; shown=${shown//|/\\|}
    printf '| %s | %s | `%s` |\n' "$name" "$rc" "$shown" >> "$MARKDOWN"
  fi
done
echo "bad_inputs: ${#CASES[@]} cases, $failures failed"
((failures == 0))
