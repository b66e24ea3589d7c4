#!/usr/bin/env bash
# FLoRA merges the aggregated adapters into W0 every round, so a client's final model is
# "W0 of the last checkpoint + its last adapter". `h2tune export --merged` must write exactly that:
#  * the merged model's task accuracy (h2tune eval, same test examples, labels and length) equals
#    what the run logged for the client in its last round (metrics.h5);
#  * its log-probs differ from the original W0 + the same adapter (the merges are really in).
#   flora_case.sh H2TUNE FLORA_RUN_DIR CLIENT TASK EXAMPLES MAX_SEQ_LEN TEXT WORK_DIR
set -euo pipefail
H2TUNE=$1 RUN=$2 CLIENT=$3 TASK=$4 EXAMPLES=$5 MAX_SEQ_LEN=$6 TEXT=$7 WORK=$8
cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # repository root: data/tasks resolves from here
rm -rf "$WORK"; mkdir -p "$WORK"
base=$(awk -v want="[client.$CLIENT]" '/^\[/ { in_client = ($0 == want) } in_client && /^model_dir = / { print $3 }' \
       "$RUN/job.ini")
[[ -n $base ]] || { echo "FAIL: no client.$CLIENT.model_dir in $RUN/job.ini"; exit 1; }

"$H2TUNE" export --run "$RUN" --client "$CLIENT" --out "$WORK/merged" --merged
got=$("$H2TUNE" eval --model-dir "$WORK/merged" --task "$TASK" --limit "$EXAMPLES" --max-seq-len "$MAX_SEQ_LEN" \
      --no-generate --threads 1 | sed -n 's/.*accuracy(score) \([0-9.]*\).*/\1/p')
logged=$(/usr/bin/python3 -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r'); \
print('%.4f' % f['metrics/test_accuracy'][-1, int(sys.argv[2])])" "$RUN/metrics.h5" "$CLIENT")
echo "merged model accuracy(score) $got; the run logged $logged for client $CLIENT in its last round"
[[ -n $got && $got == "$logged" ]] || { echo "FAIL: accuracy differs"; exit 1; }

"$H2TUNE" eval --model-dir "$WORK/merged" --perplexity "$TEXT" --json "$WORK/merged.json" --threads 1
"$H2TUNE" eval --model-dir "$base" --adapter "$RUN/adapters/client_$CLIENT.safetensors" --perplexity "$TEXT" \
    --json "$WORK/original_w0.json" --threads 1
/usr/bin/python3 tests/export/check_logprobs_json.py "$WORK/merged.json" \
    --differs-from "$WORK/original_w0.json"
