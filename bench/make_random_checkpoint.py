#!/usr/bin/env python3
"""Writes a random-weight Hugging Face checkpoint of a real model's config (for bench_load,
bench_step --model-dir and the shared-base memory measurement).

Usage: make_random_checkpoint.py OUT_DIR [--config qwen2.5-0.5b|smollm2-135m|llama-3.2-1b]
                                 [--dtype bfloat16|float32|float16] [--shard-size 2GB]
The configs are the published ones (shapes, norms, RoPE, tying); run it in the reference venv
(scripts/setup_reference.sh), which has transformers.
"""
import argparse

import torch
import transformers

CONFIGS = {
    # 494 M parameters, tied embeddings, q/k/v biases.
    "qwen2.5-0.5b": dict(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False, sliding_window=32768,
        max_window_layers=21, hidden_act="silu", bos_token_id=151643, eos_token_id=151643),
    # 135 M parameters, tied embeddings.
    "smollm2-135m": dict(
        model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu", bos_token_id=1, eos_token_id=2,
        attention_bias=False, mlp_bias=False),
    # 1.24 B parameters, tied embeddings, llama3 RoPE scaling.
    "llama-3.2-1b": dict(
        model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, hidden_act="silu",
        rope_scaling=dict(factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                          original_max_position_embeddings=8192, rope_type="llama3"),
        bos_token_id=128000, eos_token_id=128001, attention_bias=False, mlp_bias=False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--config", default="qwen2.5-0.5b", choices=sorted(CONFIGS))
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--shard-size", default="5GB")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    config = transformers.AutoConfig.for_model(**CONFIGS[args.config])
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size=args.shard_size)
    print(f"{args.out}: {args.config}, {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters "
          f"in {args.dtype}")


if __name__ == "__main__":
    main()
