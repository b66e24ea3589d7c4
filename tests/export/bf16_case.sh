#!/usr/bin/env bash
# A merged export keeps the base checkpoint's dtype: the smoke run's client 1 re-pointed at a
# bfloat16 copy of its base model. The merged model.safetensors must hold BF16 tensors equal to
# bf16(float32(W0) + B A) (to one bf16 step: the float32 sum may round differently in LibTorch and
# PyTorch), change nothing but the adapted weights, and score the same in transformers as in h2tune.
#   bf16_case.sh H2TUNE REFENV_PYTHON MODEL_DIR SMOKE_RUN_DIR TEXT WORK_DIR
set -euo pipefail
H2TUNE=$1 PY=$2 MODEL=$3 RUN=$4 TEXT=$5 WORK=$6
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rm -rf "$WORK"; mkdir -p "$WORK/run"
cp -r "$MODEL" "$WORK/base_bf16"
"$PY" - "$WORK/base_bf16" <<'PY'
import json, sys, torch
from safetensors.torch import load_file, save_file
d = sys.argv[1]
save_file({k: v.to(torch.bfloat16) for k, v in load_file(f"{d}/model.safetensors").items()},
          f"{d}/model.safetensors", metadata={"format": "pt"})
cfg = json.load(open(f"{d}/config.json"))
cfg["torch_dtype"] = "bfloat16"
json.dump(cfg, open(f"{d}/config.json", "w"), indent=2)
PY
cp -r "$RUN/adapters" "$WORK/run/"
awk -v base="$WORK/base_bf16" '/^\[/ { in_client = ($0 == "[client.1]") }
     in_client && /^model_dir = / { $0 = "model_dir = " base } { print }' "$RUN/job.ini" > "$WORK/run/job.ini"
grep -q "^model_dir = $WORK/base_bf16\$" "$WORK/run/job.ini" || { echo "FAIL: could not re-point client 1"; exit 1; }

"$H2TUNE" export --run "$WORK/run" --client 1 --out "$WORK/merged" --merged | tee "$WORK/export.log"
grep -q "W0 + B A in BF16" "$WORK/export.log" || { echo "FAIL: the merged weights are not BF16"; exit 1; }
/usr/bin/python3 "$HERE/check_export_files.py" merged "$WORK/merged" --run-adapter "$RUN/adapters/client_1.safetensors" \
    --base "$WORK/base_bf16"
"$PY" - "$WORK/base_bf16" "$WORK/merged" "$RUN/adapters/client_1.safetensors" <<'PY'
import sys, torch
from safetensors.torch import load_file
base, merged, adapter = (load_file(f"{sys.argv[1]}/model.safetensors"), load_file(f"{sys.argv[2]}/model.safetensors"),
                         load_file(sys.argv[3]))
worst = 0.0
for key in adapter:
    if not key.endswith(".lora_A.weight"):
        continue
    w = key[: -len(".lora_A.weight")] + ".weight"
    want = base[w].float() + adapter[key[: -len("lora_A.weight")] + "lora_B.weight"].float() @ adapter[key].float()
    got = merged[w]
    assert got.dtype == torch.bfloat16, f"{w} is {got.dtype}"
    # one bf16 step at each weight's magnitude
    step = torch.where(want == 0, torch.ones_like(want), want.abs()) * 2.0 ** -7
    worst = max(worst, ((got.float() - want.bfloat16().float()).abs() / step).max().item())
print(f"merged BF16 weights vs bf16(W0 + B A): worst difference {worst:.3g} bf16 steps")
sys.exit(1 if worst > 1.0 else 0)
PY
"$H2TUNE" eval --model-dir "$WORK/merged" --perplexity "$TEXT" --json "$WORK/merged.json" --threads 1
"$PY" "$HERE/compare_transformers.py" "$WORK/merged.json" --model "$WORK/merged" --tolerance 1e-4
