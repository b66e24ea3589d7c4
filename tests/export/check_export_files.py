#!/usr/bin/env python3
"""Checks the directories `h2tune export` writes, with the standard library only (docs/export.md).

  check_export_files.py adapter OUT --run-adapter RUN/adapters/client_K.safetensors \
      --base MODEL_DIR --modules q_proj,v_proj
      adapter_config.json has PEFT's LoRA fields (r from the run's adapter, lora_alpha = r,
      target_modules, base_model_name_or_path = MODEL_DIR as an absolute path); the tensors of
      adapter_model.safetensors are the run adapter's, byte for byte, under PEFT's key names.
  check_export_files.py merged OUT --run-adapter ... --base MODEL_DIR
      config.json and tokenizer.json are the base's; model.safetensors holds the base's tensors
      with their dtypes and shapes; exactly the adapted projections' weights changed.
Prints what it checked; exits 1 on the first failure.
"""
import argparse
import json
import os
import struct
import sys

PEFT_PREFIX = "base_model.model."


def read_safetensors(path):
    """name -> (dtype, shape, raw bytes)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check_adapter(args):
    cfg_path = os.path.join(args.out, "adapter_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    run = read_safetensors(args.run_adapter)
    ranks = {shape[0] for name, (_, shape, _) in run.items() if name.endswith(".lora_A.weight")}
    if len(ranks) != 1:
        fail(f"{args.run_adapter}: lora_A ranks {ranks}")
    r = ranks.pop()
    want = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": r, "bias": "none",
            "lora_dropout": 0.0, "fan_in_fan_out": False, "use_dora": False, "use_rslora": False,
            "base_model_name_or_path": os.path.abspath(args.base),
            "target_modules": sorted(args.modules.split(","))}
    for key, value in want.items():
        got = cfg.get(key, "<missing>")
        if key == "target_modules" and isinstance(got, list):
            got = sorted(got)
        if got != value:
            fail(f"{cfg_path}: {key} is {got!r}, expected {value!r}")
    print(f"{cfg_path}: {len(want)} fields as expected (r = lora_alpha = {r})")
    exported = read_safetensors(os.path.join(args.out, "adapter_model.safetensors"))
    expected_keys = {PEFT_PREFIX + k for k in run}
    if set(exported) != expected_keys:
        fail(f"adapter_model.safetensors keys differ: extra {sorted(set(exported) - expected_keys)[:3]}, "
             f"missing {sorted(expected_keys - set(exported))[:3]}")
    for k, v in run.items():
        if exported[PEFT_PREFIX + k] != v:
            fail(f"adapter_model.safetensors: {PEFT_PREFIX + k} is not the run adapter's {k} byte for byte")
    if not any(k.startswith(PEFT_PREFIX + "model.layers.0.self_attn.") for k in exported):
        fail("no key of the form base_model.model.model.layers.0.self_attn.*")
    print(f"adapter_model.safetensors: {len(exported)} tensors, the run adapter's bytes under PEFT key names")


def check_merged(args):
    for name in ["config.json", "tokenizer.json"]:
        with open(os.path.join(args.out, name), "rb") as a, open(os.path.join(args.base, name), "rb") as b:
            if a.read() != b.read():
                fail(f"{name} differs from the base model's")
    print("config.json and tokenizer.json are the base model's")
    base = read_safetensors(os.path.join(args.base, "model.safetensors"))
    merged = read_safetensors(os.path.join(args.out, "model.safetensors"))
    run = read_safetensors(args.run_adapter)
    adapted = {k[: -len(".lora_A.weight")] + ".weight" for k in run if k.endswith(".lora_A.weight")}
    if set(base) != set(merged):
        fail("model.safetensors tensor names differ from the base's")
    changed = set()
    for k, (dtype, shape, raw) in base.items():
        m_dtype, m_shape, m_raw = merged[k]
        if (m_dtype, m_shape) != (dtype, shape):
            fail(f"{k}: {m_dtype} {m_shape} in the merged model, {dtype} {shape} in the base")
        if m_raw != raw:
            changed.add(k)
    if not changed <= adapted:
        fail(f"tensors changed that carry no adapter: {sorted(changed - adapted)[:3]}")
    if not changed:
        fail("no weight changed: the adapter was not merged")
    print(f"model.safetensors: {len(base)} tensors with the base's dtypes and shapes; "
          f"{len(changed)} of the {len(adapted)} adapted weights changed, nothing else")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["adapter", "merged"])
    ap.add_argument("out")
    ap.add_argument("--run-adapter", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--modules", default="")
    args = ap.parse_args()
    (check_adapter if args.kind == "adapter" else check_merged)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
