#!/usr/bin/env python3
"""Reference fixtures for h2tune's model families, made with Hugging Face `transformers` + PEFT.

For each family this builds a random-weight checkpoint from a real model's config, cut to a few
layers and a narrower width but keeping what makes the family itself: head_dim, the GQA ratio,
rope settings, norm form, activation, biases, tied or untied embeddings, soft-capping and
sliding windows (set shorter than the test sequence so that they bite). It saves the checkpoint
with `save_pretrained` (safetensors) in float32 and bfloat16 (one family also sharded, one also
float16) and records, in `expected.safetensors`:

  input_ids              [B, T]   fixed token ids
  logprobs_f32           [B, T-1] log p(ids[:, t+1] | ids[:, :t+1]) of the float32 checkpoint
  logprobs_bf16_as_f32   [B, T-1] the bfloat16 checkpoint computed in float32
  logprobs_bf16          [B, T-1] the bfloat16 checkpoint computed in bfloat16
  logprobs_peft          [B, T-1] the float32 model with the PEFT LoRA adapter in peft/
  loss_peft              []       mean token NLL with the adapter
  grad_lora_B            [d, r]   d loss / d (the LoRA B of GRAD_MODULE), from autograd

Weights are drawn with O(1) activations (not transformers' 0.02 init, under which logits are
nearly uniform and a missing norm offset or soft-cap would hide inside the tolerance).
Usage: make_fixtures.py OUT_DIR. Deterministic (torch.manual_seed per family).
"""
import json
import math
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import peft

BATCH, SEQ = 2, 24          # longer than every sliding window below
VOCAB = 1024
LORA_RANK, LORA_ALPHA = 4, 8
GRAD_MODULE = "model.layers.1.self_attn.v_proj"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# name -> (config.json fields, extra save variants). Cut from the real configs named.
FAMILIES = {
    # meta-llama/Llama-3.2-1B: head_dim 64, GQA 32:8, rope llama3, tied, theta 5e5.
    "llama3": ({
        "model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "hidden_act": "silu",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
        "bos_token_id": 1, "eos_token_id": 2}, {"sharded": True}),
    # HuggingFaceTB/SmolLM2-135M: hidden 576, 9 heads : 3 kv, head_dim 64, tied, theta 1e5.
    "smollm2": ({
        "model_type": "llama", "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 3,
        "num_attention_heads": 3, "num_key_value_heads": 1, "hidden_act": "silu",
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "tie_word_embeddings": True}, {"float16": True}),
    # A Llama with every optional trait on: explicit head_dim != hidden/heads, attention and MLP
    # biases, untied LM head, linear rope scaling.
    "llama_traits": ({
        "model_type": "llama", "hidden_size": 192, "intermediate_size": 384, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "hidden_act": "silu",
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 2.0},
        "tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True}, {}),
    # Qwen/Qwen2.5-0.5B: 14 heads : 2 kv, head_dim 64, q/k/v biases, theta 1e6, tied.
    "qwen2": ({
        "model_type": "qwen2", "hidden_size": 448, "intermediate_size": 1024, "num_hidden_layers": 2,
        "num_attention_heads": 7, "num_key_value_heads": 1, "hidden_act": "silu",
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": 32768,
        "max_window_layers": 21}, {}),
    # mistralai/Mistral-7B-v0.1: 32 heads : 8 kv, head_dim 128, sliding window 4096, untied.
    "mistral": ({
        "model_type": "mistral", "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 128, "hidden_act": "silu",
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "sliding_window": 8, "tie_word_embeddings": False}, {}),
    # google/gemma-2b: multi-query (8 heads : 1 kv), head_dim 256 independent of hidden/heads,
    # GeGLU (tanh GELU), (1 + w) norms, sqrt(hidden) embedding scale, tied.
    "gemma": ({
        "model_type": "gemma", "hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 256,
        "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "tie_word_embeddings": True, "attention_bias": False}, {}),
    # google/gemma-2-2b: 8 heads : 4 kv, head_dim 256, query_pre_attn_scalar 256, sandwich norms,
    # sliding window on even layers, soft-capping (caps lowered so that tanh bends random logits).
    "gemma2": ({
        "model_type": "gemma2", "hidden_size": 384, "intermediate_size": 768, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "query_pre_attn_scalar": 256,
        "sliding_window": 8, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 4.0,
        "tie_word_embeddings": True, "attention_bias": False, "cache_implementation": "hybrid"}, {}),
}


def build_model(fields):
    cfg = transformers.AutoConfig.for_model(vocab_size=VOCAB, initializer_range=0.02, **fields)
    cfg._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", torch_dtype=torch.float32)


def randomise(model, gemma_norms):
    """O(1)-scale random weights (see the module docstring)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                base = 0.0 if gemma_norms else 1.0
                p.copy_(base + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                # Tied heads read logits off this table: std 2/sqrt(hidden) gives logits of std ~2.
                p.copy_(2.0 * torch.randn_like(p) / math.sqrt(p.shape[1]))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))


def forward_logits(model, ids):
    # No cache: Gemma 2's default hybrid cache would otherwise take part in the forward.
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.float()


def token_logprobs(model, ids):
    with torch.no_grad():
        logits = forward_logits(model, ids)
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def make_family(name, fields, variants, out_root):
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1000 + sorted(FAMILIES).index(name))
    model = build_model(fields).eval()
    randomise(model, fields["model_type"] in ("gemma", "gemma2"))
    ids = torch.randint(3, VOCAB, (BATCH, SEQ), dtype=torch.int64)

    model.save_pretrained(os.path.join(out, "f32"), safe_serialization=True)
    expected = {"input_ids": ids, "logprobs_f32": token_logprobs(model, ids)}
    if variants.get("sharded"):
        model.save_pretrained(os.path.join(out, "f32_sharded"), safe_serialization=True, max_shard_size="600KB")
    if variants.get("float16"):
        half = build_model(fields).eval()
        half.load_state_dict(model.state_dict())
        half.half().save_pretrained(os.path.join(out, "f16"), safe_serialization=True)
        as_f32 = AutoModelForCausalLM.from_pretrained(os.path.join(out, "f16"), torch_dtype=torch.float32,
                                                      attn_implementation="eager").eval()
        expected["logprobs_f16_as_f32"] = token_logprobs(as_f32, ids)

    bf16 = build_model(fields).eval()
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    bf16.save_pretrained(os.path.join(out, "bf16"), safe_serialization=True)
    expected["logprobs_bf16"] = token_logprobs(bf16, ids)
    as_f32 = AutoModelForCausalLM.from_pretrained(os.path.join(out, "bf16"), torch_dtype=torch.float32,
                                                  attn_implementation="eager").eval()
    expected["logprobs_bf16_as_f32"] = token_logprobs(as_f32, ids)

    # PEFT LoRA on all seven projections, with non-zero B so the adapter changes the output.
    lora = peft.LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=TARGETS, lora_dropout=0.0,
                           bias="none", task_type="CAUSAL_LM")
    peft_model = peft.get_peft_model(model, lora)
    with torch.no_grad():
        for pname, p in peft_model.named_parameters():
            if "lora_B" in pname:
                p.copy_(0.5 * torch.randn_like(p) / math.sqrt(LORA_RANK))
    peft_model.save_pretrained(os.path.join(out, "peft"))
    peft_model.eval()
    logits = forward_logits(peft_model, ids)
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    loss = -logp.mean()
    loss.backward()
    grad_param = dict(peft_model.named_parameters())["base_model.model." + GRAD_MODULE + ".lora_B.default.weight"]
    expected["logprobs_peft"] = logp.detach()
    expected["loss_peft"] = loss.detach().reshape([])
    expected["grad_lora_B"] = grad_param.grad.detach().clone()

    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out, "expected.safetensors"))
    with open(os.path.join(out, "fixture.json"), "w") as f:
        json.dump({"family": name, "grad_module": GRAD_MODULE, "lora_rank": LORA_RANK, "lora_alpha": LORA_ALPHA,
                   "transformers": transformers.__version__, "peft": peft.__version__,
                   "torch": torch.__version__}, f, indent=1)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"mean log-prob {expected['logprobs_f32'].mean():.3f}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixtures.py OUT_DIR")
    torch.set_num_threads(1)
    for name, (fields, variants) in FAMILIES.items():
        make_family(name, fields, variants, sys.argv[1])
    with open(os.path.join(sys.argv[1], "DONE"), "w") as f:
        f.write("ok\n")


if __name__ == "__main__":
    main()
