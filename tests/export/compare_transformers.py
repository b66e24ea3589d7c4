#!/usr/bin/env python3
"""Scores the token ids of an `h2tune eval --perplexity ... --json` file with Hugging Face
transformers (and PEFT) and compares the per-token log-probabilities (docs/export.md).

  compare_transformers.py H2TUNE_JSON --model MODEL_DIR [--adapter PEFT_DIR] [--tolerance 1e-4]

MODEL_DIR loads with AutoModelForCausalLM.from_pretrained in float32; with --adapter the PEFT
directory from `h2tune export` is applied with PeftModel.from_pretrained. The ids are scored in
the JSON's own windows (each a fresh forward from position 0, log-softmax in float32), so both
implementations see exactly the same inputs. With --adapter it also checks that PEFT loaded every
tensor of adapter_model.safetensors unchanged, that adapter_config.json has exactly the fields
PEFT's LoraConfig writes, and that the adapter moves the log-probs by more than the tolerance
(otherwise the comparison could not tell a lost adapter from a loaded one).
Always prints the measured max abs difference; exits 1 when it exceeds the tolerance.
"""
import argparse
import json
import os
import sys

import torch


def score(model, ids, windows):
    out = []
    with torch.no_grad():
        for begin, end, score_from in windows:
            inp = torch.tensor([ids[begin:end]], dtype=torch.long)
            # No KV cache: Gemma 2 would build its HybridCache in the forward, which needs
            # torch._dynamo (absent from torch 1.13) and is not part of the computation compared.
            logits = model(input_ids=inp, use_cache=False).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            rows = torch.arange(score_from - 1 - begin, end - 1 - begin)
            targets = torch.tensor(ids[score_from:end], dtype=torch.long)
            out.extend(logp[rows, targets].double().tolist())
    return out


def check_peft_files(model, adapter_dir):
    """Every exported tensor is in the PEFT model, unchanged; the config has PEFT's own fields."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    problems = []
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
        written = json.load(f)
    peft_fields = set(LoraConfig(r=written["r"], lora_alpha=written["lora_alpha"],
                                 target_modules=written["target_modules"], task_type="CAUSAL_LM").to_dict())
    if set(written) != peft_fields:
        problems.append(f"adapter_config.json fields differ from PEFT's LoraConfig: extra "
                        f"{sorted(set(written) - peft_fields)}, missing {sorted(peft_fields - set(written))}")
    state = model.state_dict()
    tensors = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    for key, value in tensors.items():
        # PEFT inserts the adapter name ("default") before ".weight" when loading.
        loaded_key = key[: -len(".weight")] + ".default.weight"
        if loaded_key not in state:
            problems.append(f"{key}: not in the PEFT model (looked for {loaded_key})")
        elif not torch.equal(state[loaded_key].float(), value.float()):
            problems.append(f"{key}: PEFT holds different values")
    # Only LoRA layers hold a dict; Gemma 2's attention has a float `scaling` of its own.
    scaling = {m.scaling["default"] for m in model.modules()
               if isinstance(getattr(m, "scaling", None), dict) and "default" in m.scaling}
    if scaling != {1.0}:
        problems.append(f"PEFT scaling lora_alpha / r is {scaling}, expected exactly 1")
    print(f"PEFT: {len(tensors)} adapter tensors checked, scaling {sorted(scaling)}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM

    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    ids, windows, h2 = doc["ids"], doc["windows"], doc["logprobs"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    problems = []
    what = f"transformers {transformers.__version__} ({args.model})"
    if args.adapter:
        import peft
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
        what += f" + PEFT {peft.__version__} ({args.adapter})"
        problems += check_peft_files(model, args.adapter)
    model.eval()
    ref = score(model, ids, windows)
    if len(ref) != len(h2):
        print(f"FAIL: {len(ref)} scored tokens in transformers, {len(h2)} in {args.json}")
        return 1
    diff = max(abs(a - b) for a, b in zip(ref, h2))
    mean_nll = -sum(ref) / len(ref)
    print(f"{what}: {len(ref)} tokens in {len(windows)} window(s), mean NLL {mean_nll:.6f} "
          f"(h2tune {doc['mean_nll']:.6f})")
    print(f"max abs log-prob difference h2tune vs transformers: {diff:.3e} (tolerance {args.tolerance:g})")
    if args.adapter:
        with model.disable_adapter():
            base = score(model, ids, windows)
        effect = max(abs(a - b) for a, b in zip(ref, base))
        print(f"the adapter moves the log-probs by up to {effect:.3e}")
        if effect <= args.tolerance:
            problems.append(f"the adapter's effect {effect:.3e} is within the tolerance; the comparison is void")
    if diff > args.tolerance:
        problems.append(f"max abs log-prob difference {diff:.3e} exceeds {args.tolerance:g}")
    for p in problems:
        print("FAIL:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
