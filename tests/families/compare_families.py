#!/usr/bin/env python3
"""Scores the token ids of several `h2tune eval --perplexity ... --json` files with Hugging Face
transformers in one process (importing transformers costs seconds; a family's float32 and
bfloat16 cases share it) and compares the per-token log-probabilities.

  compare_families.py --case JSON MODEL_DIR DTYPE TOLERANCE [--case ...]

Each case requires the JSON's `dtype` to be DTYPE, loads MODEL_DIR with AutoModelForCausalLM.from_pretrained(torch_dtype=DTYPE, eager
attention, as the reference fixtures were recorded) and scores the JSON's ids in the JSON's own
windows (as tests/export/compare_transformers.py does). It also requires the JSON to name
MODEL_DIR, so that a case can never pass by comparing a model with itself under another name.
For a bfloat16 case it also scores the same weights in float32 (the exact result) and requires
h2tune's bf16 error against it to be at most 2x transformers' own bf16 error + 0.02 (the bar of
tests/reference/models), and non-zero (else --dtype did not take effect).
Prints the measured max abs difference of every case; exits 1 if any case fails.
"""
import argparse
import json
import os
import sys

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def score(model, ids, windows):
    """compare_transformers.py's scoring, without a KV cache (Gemma 2 would otherwise build its
    hybrid cache inside the forward, as make_fixtures.py notes)."""
    out = []
    with torch.no_grad():
        for begin, end, score_from in windows:
            inp = torch.tensor([ids[begin:end]], dtype=torch.long)
            logits = model(input_ids=inp, attention_mask=torch.ones_like(inp), use_cache=False).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            rows = torch.arange(score_from - 1 - begin, end - 1 - begin)
            out.extend(logp[rows, torch.tensor(ids[score_from:end], dtype=torch.long)].double().tolist())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=4, action="append", required=True, metavar=("JSON", "MODEL", "DTYPE", "TOL"))
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    failures = 0
    for json_path, model_dir, dtype_name, tol in args.case:
        tol = float(tol)
        if dtype_name not in DTYPES:
            sys.exit(f"compare_families: unknown dtype {dtype_name}")
        with open(json_path, encoding="utf-8") as f:
            doc = json.load(f)
        if os.path.realpath(doc["model_dir"]) != os.path.realpath(model_dir):
            print(f"FAIL: {json_path} was scored with {doc['model_dir']}, not {model_dir}")
            failures += 1
            continue
        if doc.get("dtype") != dtype_name:
            print(f"FAIL: {json_path} was computed in {doc.get('dtype')}, not {dtype_name}")
            failures += 1
            continue

        def load(dtype):
            return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype,
                                                        attn_implementation="eager").eval()

        ref = score(load(DTYPES[dtype_name]), doc["ids"], doc["windows"])
        h2 = doc["logprobs"]
        if len(ref) != len(h2) or not h2:
            print(f"FAIL: {len(ref)} tokens scored in transformers, {len(h2)} in {json_path}")
            failures += 1
            continue
        diff = max(abs(a - b) for a, b in zip(ref, h2))
        problems = [] if diff <= tol else [f"difference {diff:.3e} exceeds {tol:g}"]
        extra = ""
        if dtype_name != "float32":
            # Low precision cannot match to float32 precision; what can be required is that both
            # round about as much. The exact result is the same weights computed in float32; the
            # bar is tests/reference/models' (ours at most 2x transformers' own error + 0.02).
            exact = score(load(torch.float32), doc["ids"], doc["windows"])
            ours = max(abs(a - b) for a, b in zip(h2, exact))
            theirs = max(abs(a - b) for a, b in zip(ref, exact))
            extra = f"; error vs float32 compute: h2tune {ours:.3e}, transformers {theirs:.3e}"
            if ours > 2 * theirs + 0.02:
                problems.append(f"h2tune's {dtype_name} error {ours:.3e} exceeds 2 x transformers' {theirs:.3e} + 0.02")
            if ours == 0:
                problems.append(f"h2tune's log-probs equal the float32 computation: --dtype {dtype_name} had no effect")
        failures += bool(problems)
        print(f"{'ok  ' if not problems else 'FAIL'} {model_dir} {dtype_name}: {len(ref)} tokens, mean NLL h2tune "
              f"{doc['mean_nll']:.6f} transformers {transformers.__version__} {-sum(ref) / len(ref):.6f}; "
              f"max abs log-prob difference {diff:.3e} (tolerance {tol:g}){extra}")
        for p in problems:
            print("FAIL:", p)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
