#!/usr/bin/env python3
"""Writes a random-weight Hugging Face checkpoint of a real model's config, for bench_load.

Usage: make_random_checkpoint.py OUT_DIR [--dtype bfloat16|float32] [--shard-size 2GB]
The config is Qwen2.5-0.5B's (494 M parameters, tied embeddings); run it in the reference venv
(scripts/setup_reference.sh), which has transformers.
"""
import argparse

import torch
import transformers

QWEN2_5_0_5B = dict(
    model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
    num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False, sliding_window=32768,
    max_window_layers=21, hidden_act="silu", bos_token_id=151643, eos_token_id=151643)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--shard-size", default="5GB")
    args = ap.parse_args()
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    config = transformers.AutoConfig.for_model(**QWEN2_5_0_5B)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size=args.shard_size)
    print(f"{args.out}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters in {args.dtype}")


if __name__ == "__main__":
    main()
