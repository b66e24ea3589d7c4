#!/usr/bin/env python3
"""Hugging Face transformers + PEFT LoRA twin of bench_step: ONE training step, timed.

What a user of transformers + PEFT would run for the client step h2tune times in bench_step:

  model = AutoModelForCausalLM.from_pretrained(DIR, torch_dtype=torch.float32, attn_implementation="eager")
  model = peft.get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                                               target_modules=[q, k, v, o, gate, up, down]_proj))
  loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
  optimizer.zero_grad(); loss.backward(); clip_grad_norm_(lora params, 1.0); AdamW.step()

* Attention: "eager" (transformers' LlamaAttention / Qwen2Attention with repeat_kv). torch 1.13 has
  no torch.nn.functional.scaled_dot_product_attention, so "sdpa" is not available here.
* The loss is transformers' own (ForCausalLMLoss): logits at EVERY position ([B, S, V], the LM
  head applied to all B*S hidden states), shifted, cross-entropy with ignore_index -100, mean over
  the kept labels. With labels -100 everywhere but the response (bench_step's batch), that is the
  same response-only mean cross-entropy h2tune computes from the response rows alone.
* The batch, the LoRA factors and the hyper-parameters come from bench_step's
  `--export-dir` file <preset>.init.safetensors (--init), so both sides see the very same tokens.
  h2tune's adapter is s*B(T+I)A; PEFT's is s*B'A. With B' = B(I+T) (the default, --lora-init
  h2tune) the PEFT model computes the same function as bench_step's at step 0, so the first loss
  must agree with bench_step's first_loss (a check that model, batch and loss are the same);
  afterwards the two train different parametrisations (PEFT has no r x r middle matrix).
* Same environment as bench_step/torch_step.py: OMP_WAIT_POLICY=passive (set before torch is
  imported), glibc mallopt(M_MMAP_MAX, 0) + mallopt(M_TRIM_THRESHOLD, 1 GiB) as h2tune's main
  (--no-mallopt to drop), torch.set_num_threads(--threads); the OpenBLAS pool is left alone unless
  --blas-threads.
* Peak: the best of --peak-reps 2048 x 2048 fp32 mm in this process before the model is loaded
  (as bench_step). FLOPs: bench_step's formula (torch_step.step_flops) applied to PEFT's
  computation: no r x r middle term, and the LM head (forward and dHidden) at all B*S positions.
* Memory: VmRSS after the model, PEFT wrapper, optimiser and batch are set up; then the peak RSS
  counter is reset (/proc/self/clear_refs 5) and VmHWM read after the timed steps: step peak =
  VmHWM - that RSS (activations, gradients, AdamW moments, allocator slack).

Run it with the reference venv (scripts/setup_reference.sh: transformers 4.46.3, peft 0.13.2,
Debian's torch 1.13 via system site packages):

  build/refenv/bin/python bench/peft_step.py --model-dir DIR/smollm2-135m \
      --init /tmp/init/smollm2-135m.init.safetensors --threads 2 --json /tmp/peft.json
"""

import os
import sys

# As bench_step / torch_step.py / h2tune's main: libgomp reads this when torch is imported.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "passive"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

IGNORE_INDEX = -100
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def proc_status_kib(*keys):
    with open("/proc/self/status") as f:
        text = f.read()
    out = {}
    for k in keys:
        m = re.search(rf"^{k}:\s+(\d+)\s+kB", text, re.M)
        out[k] = int(m.group(1)) if m else None
    return out


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0). False where /proc refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True, help="Hugging Face checkpoint directory (config.json + weights)")
    ap.add_argument("--preset", help="name in the output (default: the directory's name)")
    ap.add_argument("--init", help="bench_step --export-dir's <preset>.init.safetensors (batch, A/B/T, hyper-parameters)")
    ap.add_argument("--lora-init", choices=["h2tune", "peft"], default="h2tune",
                    help="h2tune: lora_A = A, lora_B = B(I+T) from --init (same function as bench_step at step 0); "
                         "peft: PEFT's own init (B = 0)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="openblas_set_num_threads (0 = leave; set_num_threads does not reach it)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attn", default="eager", help="attn_implementation (torch 1.13: eager only)")
    ap.add_argument("--peak-n", type=int, default=2048)
    ap.add_argument("--peak-reps", type=int, default=5)
    ap.add_argument("--no-mallopt", action="store_true", help="leave glibc malloc at its defaults")
    ap.add_argument("--profile", type=int, default=0, help="after timing, profile this many steps (torch.profiler)")
    ap.add_argument("--profile-rows", type=int, default=25)
    ap.add_argument("--json", help="write the results as JSON")
    # Without --init only (bench_step's defaults; the batch is then NOT bench_step's tokens):
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    args = ap.parse_args()

    mallopt_tuned = not args.no_mallopt
    if mallopt_tuned:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)        # M_MMAP_MAX
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD

    import torch
    import transformers
    import peft
    from safetensors import safe_open

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_step import (blas_threads, measure_peak, scheduled_lr, set_threads, step_flops,  # noqa: E402
                            thread_environment, write_json)

    threads = set_threads("peft_step.py", args.threads, args.blas_threads)
    env = thread_environment(mallopt_tuned)
    out = {"tool": "peft_step", "impl": "peft", "torch_version": torch.__version__,
           "transformers_version": transformers.__version__, "peft_version": peft.__version__,
           "python": sys.version.split()[0], "threads": threads, "blas_threads": blas_threads(), "env": env,
           "sdpa_available": hasattr(torch.nn.functional, "scaled_dot_product_attention")}
    peak = None
    if args.peak_n > 0:
        peak = measure_peak(args.peak_n, max(1, args.peak_reps))
        out["peak"] = peak
    mem_start = proc_status_kib("VmRSS")["VmRSS"]

    # ------------------------------------------------------------------ the batch and hyper-parameters
    init, meta = {}, {}
    if args.init:
        with safe_open(args.init, framework="pt") as f:
            meta = dict(f.metadata() or {})
            init = {k: f.get_tensor(k) for k in f.keys()}
    rank = int(meta.get("rank", args.rank))
    alpha = float(meta.get("alpha", args.alpha))
    lr = float(meta.get("lr", args.lr))
    total_steps = int(meta.get("total_steps", 1000))
    warmup_steps = int(meta.get("warmup_steps", 0))
    min_lr_ratio = float(meta.get("min_lr_ratio", 0.1))
    weight_decay = float(meta.get("weight_decay", args.weight_decay))
    grad_clip = float(meta.get("grad_clip", args.grad_clip))
    if meta.get("train_middle", "0") == "1":
        print("peft_step.py: the export was made with --train-middle; PEFT has no middle matrix", file=sys.stderr)

    # ------------------------------------------------------------------ model + PEFT
    t_load = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model_dir, torch_dtype=torch.float32, attn_implementation=args.attn)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=PROJECTIONS, lora_dropout=0.0, bias="none",
                          task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, cfg)
    load_s = time.perf_counter() - t_load

    lora_modules = {}
    for name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and hasattr(module, "lora_A") and "default" in module.lora_A:
            key = name[len("base_model.model."):] if name.startswith("base_model.model.") else name
            lora_modules[key] = module
    if args.init and args.lora_init == "h2tune":
        with torch.no_grad():
            for key, module in lora_modules.items():
                a, b, t = init[key + ".lora_A"], init[key + ".lora_B"], init[key + ".middle"]
                module.lora_A["default"].weight.copy_(a)
                module.lora_B["default"].weight.copy_(b @ (torch.eye(t.shape[0]) + t))
        missing = [k for k in init if k.endswith(".lora_A") and k[:-len(".lora_A")] not in lora_modules]
        if missing:
            sys.exit(f"peft_step.py: {len(missing)} adapters of --init have no PEFT module (e.g. {missing[0]})")
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_params = sum(p.numel() for p in trainable)
    base_params = sum(p.numel() for p in model.parameters()) - trainable_params

    if init:
        input_ids = init["batch.input_ids"].long()
        attention_mask = init["batch.attention_mask"].long()
        labels = init["batch.labels"].long()
    else:
        print("peft_step.py: no --init: drawing the batch here (not bench_step's tokens)", file=sys.stderr)
        torch.manual_seed(args.seed + 3)
        input_ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), dtype=torch.int64)
        attention_mask = torch.ones_like(input_ids)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        resp = max(1, args.seq // 4)
        labels[:, -resp:] = input_ids[:, -resp:]
    batch, seq = input_ids.shape
    tokens = int(attention_mask.ne(0).sum())
    response_tokens = int(labels.ne(IGNORE_INDEX).sum())
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)

    state = {"step": 0}

    def train_step():
        t0 = time.perf_counter()
        # HF Trainer's compute_loss: outputs other than the loss are dropped right away.
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)  # as bench_step (LibTorch 1.13 zeroes)
        loss.backward()
        t2 = time.perf_counter()
        for g in optimizer.param_groups:
            g["lr"] = scheduled_lr(lr, total_steps, warmup_steps, min_lr_ratio, state["step"])
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()
        state["step"] += 1
        value = loss.item()
        t3 = time.perf_counter()
        return {"forward_ms": (t1 - t0) * 1e3, "backward_ms": (t2 - t1) * 1e3, "optimizer_ms": (t3 - t2) * 1e3,
                "total_ms": (t3 - t0) * 1e3, "loss": value}

    # ------------------------------------------------------------------ timing
    gc.collect()
    mem_loaded = proc_status_kib("VmRSS", "VmHWM")
    hwm_reset = reset_peak_rss()
    first_loss = None
    for i in range(args.warmup):
        r = train_step()
        if i == 0:
            first_loss = r["loss"]
    rows = []
    for _ in range(args.steps):
        r = train_step()
        if first_loss is None:
            first_loss = r["loss"]
        rows.append(r)
    mem_after = proc_status_kib("VmRSS", "VmHWM")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile):
                train_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))

    hc = model.config
    heads = hc.num_attention_heads
    c = types.SimpleNamespace(
        hidden_size=hc.hidden_size, intermediate_size=hc.intermediate_size, num_hidden_layers=hc.num_hidden_layers,
        num_attention_heads=heads, num_key_value_heads=getattr(hc, "num_key_value_heads", None) or heads,
        head_dim=getattr(hc, "head_dim", None) or hc.hidden_size // heads, vocab_size=hc.vocab_size)
    # PEFT's computation: no r x r middle, LM head at all batch*seq positions.
    fl = step_flops(c, batch, seq, rank, middle=False, train_middle=False, head_rows=batch * seq)
    total = [r["total_ms"] for r in rows]
    ms = statistics.median(total)
    gflops = fl["total"] / (ms / 1e3) / 1e9
    preset = args.preset or os.path.basename(os.path.normpath(args.model_dir))
    result = {
        "preset": preset, "model_dir": os.path.abspath(args.model_dir), "init": args.init,
        "lora_init": args.lora_init if args.init else "peft",
        "config": {"model_type": hc.model_type, "hidden_size": c.hidden_size,
                   "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_hidden_layers,
                   "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
                   "vocab_size": c.vocab_size},
        "attn_implementation": getattr(hc, "_attn_implementation", args.attn),
        "batch": batch, "seq": seq, "rank": rank, "alpha": alpha, "lr": lr, "weight_decay": weight_decay,
        "grad_clip": grad_clip, "head": "full", "head_rows": batch * seq,
        "tokens": tokens, "response_tokens": response_tokens,
        "base_params": base_params, "trainable_params": trainable_params,
        "warmup": args.warmup, "steps": args.steps, "first_loss": first_loss,
        "losses": [r["loss"] for r in rows],
        "load_s": load_s,
        "ms": {"median": ms, "min": min(total), "max": max(total), "all": total},
        "phase_ms": {k: statistics.median(r[k + "_ms"] for r in rows) for k in ("forward", "backward", "optimizer")},
        "tokens_per_s": tokens / (ms / 1e3),
        "flops": fl, "gflops_per_s": gflops,
        "fraction_of_peak": gflops / peak["best_gflops"] if peak else 0.0,
        "memory_kib": {
            "rss_before_load": mem_start,
            "rss_loaded": mem_loaded["VmRSS"],
            "hwm_load": mem_loaded["VmHWM"],
            "hwm_steps": mem_after["VmHWM"] if hwm_reset else None,
            "rss_after_steps": mem_after["VmRSS"],
            "step_peak": (mem_after["VmHWM"] - mem_loaded["VmRSS"]) if hwm_reset else None,
            "process_peak": max(mem_loaded["VmHWM"], mem_after["VmHWM"]),
        },
    }
    out["results"] = [result]

    head = (f"\npeft_step (transformers {transformers.__version__} + peft {peft.__version__}, torch {torch.__version__}, "
            f"attention {result['attn_implementation']}), threads {threads} (OpenBLAS {blas_threads()})")
    if peak:
        head += f", peak {peak['n']}x{peak['n']} fp32 matmul: best {peak['best_gflops']:.1f} GFLOP/s"
    print(head)
    print(f"{'preset':13s} {'tokens':>7s} {'ms/step':>9s} {'fwd ms':>9s} {'bwd ms':>9s} {'opt ms':>9s} "
          f"{'tok/s':>10s} {'GFLOP':>9s} {'GFLOP/s':>9s} {'%peak':>7s} {'step MiB':>9s} {'loss0':>10s}")
    m = result["memory_kib"]
    step_mib = f"{m['step_peak'] / 1024:.0f}" if m["step_peak"] is not None else "n/a"
    print(f"{preset:13s} {tokens:7d} {ms:9.2f} {result['phase_ms']['forward']:9.2f} "
          f"{result['phase_ms']['backward']:9.2f} {result['phase_ms']['optimizer']:9.2f} "
          f"{result['tokens_per_s']:10.1f} {fl['total'] / 1e9:9.3f} {gflops:9.2f} "
          f"{100 * result['fraction_of_peak']:6.1f}% {step_mib:>9s} {first_loss:10.6f}")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
