#!/usr/bin/python3
"""PyTorch reference for bench_step: ONE client training step of h2tune in plain torch.nn.

A faithful re-implementation of src/model/llama.cpp (RMSNorm, RoPE, grouped-query attention with
an additive key-padding + causal mask, SwiGLU, tied lm_head), src/adapter/triple_adapter.cpp
(delta = s * B (T + I) A x, computed as u = x A^T; u += u T^T; s * u B^T) and
src/train/finetune.cpp (response-only cross-entropy with the LM head computed at the response rows
only, as AlternatingTrainer does; AdamW with the scheduled learning rate and global-norm clipping),
so that the timing compares two implementations of the same computation. --head full computes the
logits at every position instead (the formulation before; bench_step --head full likewise).

The base model is read from config.json + model.safetensors (parsed here: Debian's python3-torch
may come without the `safetensors` package). Adapters, middle matrices, the batch and the
hyper-parameters come from the <preset>.init.safetensors file that `bench_step --export-dir` wrote,
so both sides run on exactly the same numbers. Run with /usr/bin/python3 (Debian's torch 1.13).

  torch_step.py --preset h2-tiny --init-dir DIR --threads 2 [--json PATH]   # timing
  torch_step.py --preset h2-tiny --init-dir DIR --check                      # compare with C++
  torch_step.py --summarize-trace TRACE.json                                 # bench_step --profile
"""

import os
import sys

# The environment h2tune's main runs in (src/main.cpp): passive OpenMP waiting. libgomp reads it
# when it is loaded, i.e. at `import torch`, so it is set before that import.
if "OMP_WAIT_POLICY" not in os.environ and "H2TUNE_NO_REEXEC" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "passive"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn as nn  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError as e:  # pragma: no cover
    sys.exit(f"torch_step.py: cannot import torch ({e}); run it with /usr/bin/python3")

IGNORE_INDEX = -100
MASK_VALUE = -1e30  # llama.cpp's kMaskValue: finite, so fully masked rows stay NaN-free
MAX_CACHED_POSITIONS = 8192


# ------------------------------------------------------------------------------ safetensors

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def load_safetensors(path):
    """Returns ({name: tensor}, metadata): 8-byte little-endian header length, JSON, raw data."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    buf = bytearray(data[8 + n:])
    out = {}
    for name, e in header.items():
        dtype = _DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        shape = list(e["shape"])
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = (end - begin) // itemsize
        if count != math.prod(shape):
            raise ValueError(f"{path}: tensor {name}: {end - begin} bytes do not hold shape {shape}")
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(buf, dtype=dtype, count=count, offset=begin).reshape(shape).clone()
    return out, meta


# ------------------------------------------------------------------------------ model

class Config:
    def __init__(self, j):
        self.vocab_size = int(j["vocab_size"])
        self.hidden_size = int(j["hidden_size"])
        self.intermediate_size = int(j["intermediate_size"])
        self.num_hidden_layers = int(j["num_hidden_layers"])
        self.num_attention_heads = int(j["num_attention_heads"])
        self.num_key_value_heads = int(j.get("num_key_value_heads") or self.num_attention_heads)
        self.max_position_embeddings = int(j.get("max_position_embeddings", 2048))
        self.rope_theta = float(j.get("rope_theta", 10000.0))
        self.rms_norm_eps = float(j.get("rms_norm_eps", 1e-6))
        self.tie_word_embeddings = bool(j.get("tie_word_embeddings", False))
        # The traits of the built-in presets' three families (llama, qwen2, gemma); the rest of
        # h2tune's family table (Gemma 2, Mistral windows, rope scaling) is refused by name.
        self.model_type = j.get("model_type", "llama")
        if self.model_type not in ("llama", "qwen2", "gemma"):
            raise ValueError(f"model_type {self.model_type!r} is not implemented in torch_step.py (llama, qwen2, gemma)")
        gemma = self.model_type == "gemma"
        self.head_dim = int(j.get("head_dim") or self.hidden_size // self.num_attention_heads)
        self.qkv_bias = self.model_type == "qwen2" or bool(j.get("attention_bias", False))
        self.o_bias = self.model_type != "qwen2" and bool(j.get("attention_bias", False))
        if j.get("mlp_bias"):
            raise ValueError("mlp_bias is not implemented in torch_step.py")
        act = (j.get("hidden_activation") or "gelu_pytorch_tanh") if gemma else j.get("hidden_act", "silu")
        if act not in ("silu", "gelu_pytorch_tanh"):
            raise ValueError(f"activation {act!r} is not implemented in torch_step.py")
        self.activation = act
        self.norm_unit_offset = gemma      # x_hat * (1 + w), in float32
        self.scale_embeddings = gemma      # embeddings * sqrt(hidden_size)
        if j.get("rope_scaling"):
            raise ValueError("rope_scaling is not implemented in torch_step.py")


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, unit_offset=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.eps = eps
        self.unit_offset = unit_offset  # Gemma: the stored weight is w in x_hat * (1 + w)

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        w = 1.0 + self.weight if self.unit_offset else self.weight
        return w * (x * torch.rsqrt(variance + self.eps))


class AdaptedLinear(nn.Module):
    """Frozen bias-free W0 plus the triple-matrix adapter: y = x W0^T + s * ((u + u T^T) B^T), u = x A^T."""

    def __init__(self, in_features, out_features, bias=False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.lora_A = None
        self.lora_B = None
        self.middle = None
        self.scale = 1.0

    def attach(self, a, b, middle, scale, train_middle):
        self.lora_A = nn.Parameter(a.clone())
        self.lora_B = nn.Parameter(b.clone())
        self.middle = nn.Parameter(middle.clone(), requires_grad=train_middle) if middle is not None else None
        self.scale = scale

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if self.lora_A is None:
            return y
        u = F.linear(x, self.lora_A)
        if self.middle is not None:
            u = u + F.linear(u, self.middle)
        return y + F.linear(u, self.lora_B) * self.scale


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x, groups):
    """[B, KV, T, D] -> [B, KV * groups, T, D]; head h uses kv head h // groups (transformers)."""
    if groups == 1:
        return x
    b, kv, t, d = x.shape
    return x[:, :, None, :, :].expand(b, kv, groups, t, d).reshape(b, kv * groups, t, d)


class Attention(nn.Module):
    def __init__(self, c, impl):
        super().__init__()
        self.c = c
        self.impl = impl
        h, d = c.hidden_size, c.head_dim
        self.q_proj = AdaptedLinear(h, c.num_attention_heads * d, c.qkv_bias)
        self.k_proj = AdaptedLinear(h, c.num_key_value_heads * d, c.qkv_bias)
        self.v_proj = AdaptedLinear(h, c.num_key_value_heads * d, c.qkv_bias)
        self.o_proj = AdaptedLinear(c.num_attention_heads * d, h, c.o_bias)

    def forward(self, x, cos, sin, mask, grouped_mask):
        c = self.c
        b, t, _ = x.shape
        heads, kv, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        groups = heads // kv
        if self.impl == "hf":
            # transformers' eager LlamaAttention: [B, H, T, D] layout, repeat_kv, matmul, softmax.
            q = self.q_proj(x).view(b, t, heads, d).transpose(1, 2)
            k = self.k_proj(x).view(b, t, kv, d).transpose(1, 2)
            v = self.v_proj(x).view(b, t, kv, d).transpose(1, 2)
            cs, sn = cos.unsqueeze(1), sin.unsqueeze(1)
            q = q * cs + rotate_half(q) * sn
            k = k * cs + rotate_half(k) * sn
            k = repeat_kv(k, groups)
            v = repeat_kv(v, groups)
            scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(d) + mask
            probs = F.softmax(scores, dim=-1, dtype=torch.float32)
            out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, heads * d)
            return self.o_proj(out)
        # "grouped": the exact op sequence of llama.cpp (no repeat_kv; query groups stacked as rows).
        cs, sn = cos.unsqueeze(2), sin.unsqueeze(2)
        q = self.q_proj(x).view(b, t, heads, d)
        q = q * cs + rotate_half(q) * sn
        k = self.k_proj(x).view(b, t, kv, d)
        k = (k * cs + rotate_half(k) * sn).transpose(1, 2)
        v = self.v_proj(x).view(b, t, kv, d).transpose(1, 2)
        s = k.shape[2]
        q3 = q.view(b, t, kv, groups, d).permute(0, 2, 3, 1, 4).reshape(b * kv, groups * t, d)
        k3t = k.reshape(b * kv, s, d).transpose(1, 2)
        v3 = v.reshape(b * kv, s, d)
        scores = torch.baddbmm(grouped_mask, q3, k3t, beta=1.0, alpha=1.0 / math.sqrt(d))
        probs = torch.softmax(scores, -1)
        out = torch.bmm(probs, v3).view(b, kv, groups, t, d).permute(0, 3, 1, 2, 4).reshape(b, t, heads * d)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = AdaptedLinear(c.hidden_size, c.intermediate_size)
        self.up_proj = AdaptedLinear(c.hidden_size, c.intermediate_size)
        self.down_proj = AdaptedLinear(c.intermediate_size, c.hidden_size)
        self.activation = c.activation

    def forward(self, x):
        g = self.gate_proj(x)
        g = F.silu(g) if self.activation == "silu" else F.gelu(g, approximate="tanh")
        return self.down_proj(g * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c, impl):
        super().__init__()
        self.self_attn = Attention(c, impl)
        self.mlp = MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_unit_offset)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_unit_offset)

    def forward(self, x, cos, sin, mask, grouped_mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, grouped_mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaForCausalLM(nn.Module):
    def __init__(self, c, impl="hf"):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Parameter(torch.empty(c.vocab_size, c.hidden_size), requires_grad=False)
        self.layers = nn.ModuleList([DecoderLayer(c, impl) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, c.norm_unit_offset)
        self.lm_head = (None if c.tie_word_embeddings
                        else nn.Parameter(torch.empty(c.vocab_size, c.hidden_size), requires_grad=False))
        d = c.head_dim
        # inv_freq = 1 / theta^(2i/d) in float32, cos/sin tables of cat(freqs, freqs) (llama.cpp).
        exponent = torch.arange(0, d, 2, dtype=torch.int64).to(torch.float32) / d
        self.inv_freq = torch.reciprocal(torch.pow(c.rope_theta, exponent))
        rows = min(c.max_position_embeddings, MAX_CACHED_POSITIONS)
        freqs = torch.outer(torch.arange(rows, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), -1)
        self.cos_cached, self.sin_cached = emb.cos(), emb.sin()

    def projections(self):
        """(HF name without .weight, module) in llama.cpp's order: layer by layer, q k v o gate up down."""
        out = []
        for i, l in enumerate(self.layers):
            p = f"model.layers.{i}."
            out += [(p + "self_attn.q_proj", l.self_attn.q_proj), (p + "self_attn.k_proj", l.self_attn.k_proj),
                    (p + "self_attn.v_proj", l.self_attn.v_proj), (p + "self_attn.o_proj", l.self_attn.o_proj),
                    (p + "mlp.gate_proj", l.mlp.gate_proj), (p + "mlp.up_proj", l.mlp.up_proj),
                    (p + "mlp.down_proj", l.mlp.down_proj)]
        return out

    def load_base(self, tensors):
        with torch.no_grad():
            self.embed_tokens.copy_(tensors["model.embed_tokens.weight"].float())
            self.norm.weight.copy_(tensors["model.norm.weight"].float())
            if self.lm_head is not None:
                self.lm_head.copy_(tensors["lm_head.weight"].float())
            for name, proj in self.projections():
                proj.weight.copy_(tensors[name + ".weight"].float())
                if proj.bias is not None:
                    proj.bias.copy_(tensors[name + ".bias"].float())
            for i, l in enumerate(self.layers):
                p = f"model.layers.{i}."
                l.input_layernorm.weight.copy_(tensors[p + "input_layernorm.weight"].float())
                l.post_attention_layernorm.weight.copy_(tensors[p + "post_attention_layernorm.weight"].float())

    def forward(self, input_ids, attention_mask):
        return self.logits(self.hidden(input_ids, attention_mask))

    def logits(self, h):
        return F.linear(h, self.embed_tokens if self.lm_head is None else self.lm_head)

    def hidden(self, input_ids, attention_mask):
        """Final-norm hidden states [B, T, H] (llama.cpp's forward_hidden)."""
        c = self.c
        b, t = input_ids.shape
        key_mask = attention_mask.ne(0).long()
        pos = (key_mask.cumsum(1) - 1).clamp_min(0)  # padding never shifts positions
        allowed = torch.arange(t).unsqueeze(0).le(torch.arange(t).unsqueeze(1))  # [T, S]: causal
        allowed = allowed.unsqueeze(0).logical_and(key_mask.bool().unsqueeze(1))  # [B, T, S]
        mask = torch.zeros(allowed.shape).masked_fill_(allowed.logical_not(), MASK_VALUE).unsqueeze(1)
        grouped_mask = None
        if self.layers and self.layers[0].self_attn.impl == "grouped":
            kv = c.num_key_value_heads
            g = c.num_attention_heads // kv
            grouped_mask = mask.unsqueeze(1).expand(b, kv, g, t, t).reshape(b * kv, g * t, t)
        flat = pos.reshape(-1)
        cos = self.cos_cached.index_select(0, flat).view(b, t, c.head_dim)
        sin = self.sin_cached.index_select(0, flat).view(b, t, c.head_dim)
        h = F.embedding(input_ids, self.embed_tokens)
        if c.scale_embeddings:
            h = h * torch.tensor(math.sqrt(c.hidden_size), dtype=h.dtype)
        for layer in self.layers:
            h = layer(h, cos, sin, mask, grouped_mask)
        return self.norm(h)


def response_loss(logits, labels):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def response_rows(labels):
    """Flat indices b*T + t of the positions whose next-token label is kept, and those labels
    (finetune.cpp response_rows): the only positions the loss reads."""
    t = labels.shape[1]
    nxt = labels[:, 1:]
    keep = nxt.ne(IGNORE_INDEX)
    bt = keep.nonzero()
    return bt[:, 0] * t + bt[:, 1], nxt[keep]


def step_loss(model, input_ids, attention_mask, labels, head):
    """The loss of one step: the LM head at the response rows only ("rows", h2tune's step), or at
    every position ("full")."""
    if head == "full":
        return response_loss(model(input_ids, attention_mask), labels)
    h = model.hidden(input_ids, attention_mask)
    rows, targets = response_rows(labels)
    logits = model.logits(h.reshape(-1, h.shape[-1]).index_select(0, rows))
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


def scheduled_lr(lr, total_steps, warmup_steps, min_lr_ratio, step):
    """src/train/finetune.cpp scheduled_lr: linear warm-up, then cosine to lr * min_lr_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay)
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------ FLOPs

def step_flops(c, batch, seq, rank, middle=True, train_middle=False, head_rows=None):
    """Matmul FLOPs of one step; the same formula as bench_step.cpp's step_flops (see the comment
    there): frozen W0 costs 2N·in·out forward and, where the input needs a gradient, the same again
    for dX only (no dW0); layer 0's q/k/v inputs need none. Attention counts the full S x S."""
    n, r = float(batch * seq), float(rank)
    d, f, hd = c.hidden_size, c.intermediate_size, c.head_dim
    q_out, kv_out = c.num_attention_heads * hd, c.num_key_value_heads * hd
    projs = [(d, q_out, True), (d, kv_out, True), (d, kv_out, True), (q_out, d, False),
             (d, f, False), (d, f, False), (f, d, False)]
    rr = r * r if middle else 0.0
    fl = defaultdict(float)
    for layer in range(c.num_hidden_layers):
        for (fin, fout, attn_input) in projs:
            x_grad = not (layer == 0 and attn_input)
            fl["base_fwd"] += 2 * n * fin * fout
            fl["adapter_fwd"] += 2 * n * (fin * r + rr + r * fout)
            if x_grad:
                fl["base_bwd"] += 2 * n * fin * fout
            fl["adapter_bwd"] += 2 * n * (2 * fout * r + rr + (rr if middle and train_middle else 0.0) + fin * r)
            if x_grad:
                fl["adapter_bwd"] += 2 * n * r * fin
        attn = 2.0 * 2.0 * batch * seq * seq * q_out
        fl["attention_fwd"] += attn
        fl["attention_bwd"] += 2 * attn
    fl["head_fwd"] = 2 * float(n if head_rows is None else head_rows) * d * c.vocab_size
    fl["head_bwd"] = fl["head_fwd"]
    fl["forward"] = fl["base_fwd"] + fl["adapter_fwd"] + fl["attention_fwd"] + fl["head_fwd"]
    fl["backward"] = fl["base_bwd"] + fl["adapter_bwd"] + fl["attention_bwd"] + fl["head_bwd"]
    fl["total"] = fl["forward"] + fl["backward"]
    return dict(fl)


# ------------------------------------------------------------------------------ setup

class Setup:
    pass


def _meta(meta, key, default, conv):
    return conv(meta[key]) if key in meta else default


def build_setup(args, preset):
    s = Setup()
    s.preset = preset
    init_path = os.path.join(args.init_dir, f"{preset}.init.safetensors") if args.init_dir else None
    init, meta = (load_safetensors(init_path) if init_path else ({}, {}))
    s.model_dir = meta.get("model_dir") or os.path.join(args.models_dir, preset)
    s.rank = _meta(meta, "rank", args.rank, int)
    s.alpha = _meta(meta, "alpha", 16.0, float)
    s.lr = _meta(meta, "lr", 2e-4, float)
    s.total_steps = _meta(meta, "total_steps", 1000, int)
    s.warmup_steps = _meta(meta, "warmup_steps", 0, int)
    s.min_lr_ratio = _meta(meta, "min_lr_ratio", 0.1, float)
    s.weight_decay = _meta(meta, "weight_decay", 0.0, float)
    s.grad_clip = _meta(meta, "grad_clip", 1.0, float)
    s.train_middle = _meta(meta, "train_middle", False, lambda v: v == "1")
    s.head = args.head or meta.get("head") or "rows"

    with open(os.path.join(s.model_dir, "config.json")) as f:
        s.config = Config(json.load(f))
    model = LlamaForCausalLM(s.config, impl=args.attention)
    base, _ = load_safetensors(os.path.join(s.model_dir, "model.safetensors"))
    model.load_base(base)
    del base
    model.train()
    s.base_params = sum(p.numel() for p in model.parameters())

    scale = s.alpha / s.rank
    if init:
        for name, proj in model.projections():
            proj.attach(init[name + ".lora_A"], init[name + ".lora_B"], init[name + ".middle"], scale,
                        s.train_middle)
        s.input_ids = init["batch.input_ids"]
        s.attention_mask = init["batch.attention_mask"]
        s.labels = init["batch.labels"]
    else:
        # Stand-alone: same recipe, torch's own RNG (NOT bit-identical to bench_step's numbers).
        print(f"torch_step.py: {preset}: no --init-dir, drawing adapters and batch here "
              "(results are not comparable number-for-number with bench_step)", file=sys.stderr)
        torch.manual_seed(args.seed + 1)
        for name, proj in model.projections():
            a = torch.empty(s.rank, proj.weight.shape[1])
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.randn(proj.weight.shape[0], s.rank) * 0.02
            t = torch.randn(s.rank, s.rank) * 0.1
            proj.attach(a, b, t, scale, s.train_middle)
        torch.manual_seed(args.seed + 3)
        s.input_ids = torch.randint(0, s.config.vocab_size, (args.batch, args.seq), dtype=torch.int64)
        s.attention_mask = torch.ones_like(s.input_ids)
        s.labels = torch.full_like(s.input_ids, IGNORE_INDEX)
        resp = max(1, args.seq // 4)
        s.labels[:, -resp:] = s.input_ids[:, -resp:]
    s.model = model
    # llama.cpp's AdaptedModel::adapter_parameters order (A, B per adapter), then every T.
    s.trainable = []
    for _, proj in model.projections():
        s.trainable += [proj.lora_A, proj.lora_B]
    if s.train_middle:
        s.trainable += [proj.middle for _, proj in model.projections()]
    s.trainable_params = sum(p.numel() for p in s.trainable)
    s.batch, s.seq = s.input_ids.shape
    s.tokens = int(s.attention_mask.ne(0).sum())
    s.response_tokens = int(s.labels.ne(IGNORE_INDEX).sum())
    s.head_rows = s.batch * s.seq if s.head == "full" else int(response_rows(s.labels)[0].numel())
    s.optimizer = torch.optim.AdamW(s.trainable, lr=s.lr, weight_decay=s.weight_decay,
                                    foreach=True if args.foreach else None)
    s.step = 0
    return s


def _openblas():
    """Debian's torch calls the system BLAS (OpenBLAS, pthreads); its pool ignores set_num_threads."""
    try:
        return ctypes.CDLL("libopenblas.so.0")
    except OSError:
        return None


def blas_threads():
    lib = _openblas()
    return lib.openblas_get_num_threads() if lib is not None else -1


def write_json(path, obj):
    """`obj` as indented JSON at `path`, creating its directory."""
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def set_threads(prog, threads, blas):
    """torch.set_num_threads(threads) and OpenBLAS's pool (0: leave either); returns torch's count."""
    if threads > 0:
        torch.set_num_threads(threads)
    if blas > 0:
        lib = _openblas()
        if lib is None:
            print(f"{prog}: --blas-threads: the BLAS is not OpenBLAS; ignored", file=sys.stderr)
        else:
            lib.openblas_set_num_threads(blas)
    return torch.get_num_threads()


def thread_environment(mallopt_tuned):
    """The settings that decide how a step uses the cores, recorded with every result."""
    env = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS", "GOMP_SPINCOUNT", "OMP_PROC_BIND")}
    env["mallopt_tuned"] = mallopt_tuned
    env["blas_threads"] = blas_threads()
    return env


def global_grad_norm(params):
    sq = 0.0
    for p in params:
        if p.grad is not None:
            sq += float(p.grad.norm()) ** 2
    return math.sqrt(sq)


def train_step(s, want_grad_norm=False):
    """One client step, timed by phase: forward + loss | zero_grad + backward | lr, clip, AdamW."""
    t0 = time.perf_counter()
    loss = step_loss(s.model, s.input_ids, s.attention_mask, s.labels, s.head)
    t1 = time.perf_counter()
    s.optimizer.zero_grad(set_to_none=False)  # LibTorch 1.13's Optimizer::zero_grad zeroes
    loss.backward()
    t2 = time.perf_counter()
    gn = global_grad_norm(s.trainable) if want_grad_norm else float("nan")
    t2b = time.perf_counter()
    lr = scheduled_lr(s.lr, s.total_steps, s.warmup_steps, s.min_lr_ratio, s.step)
    for g in s.optimizer.param_groups:
        g["lr"] = lr
    if s.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(s.trainable, s.grad_clip)
    s.optimizer.step()
    s.step += 1
    value = loss.item()
    t3 = time.perf_counter()
    return {"forward_ms": (t1 - t0) * 1e3, "backward_ms": (t2 - t1) * 1e3, "optimizer_ms": (t3 - t2b) * 1e3,
            "total_ms": (t1 - t0 + t2 - t1 + t3 - t2b) * 1e3, "loss": value, "grad_norm": gn}


def measure_peak(n, reps):
    with torch.no_grad():
        torch.manual_seed(7)
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        torch.mm(a, b, out=c)
        gf = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            gf.append(2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return {"n": n, "best_gflops": max(gf), "median_gflops": statistics.median(gf)}


# ------------------------------------------------------------------------------ modes

def run_timing(args, s, peak):
    first_loss = None
    for i in range(args.warmup):
        r = train_step(s)
        if i == 0:
            first_loss = r["loss"]
    rows = []
    for _ in range(args.steps):
        r = train_step(s)
        if first_loss is None:
            first_loss = r["loss"]
        rows.append(r)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        # Extra steps after the timed ones, so profiling overhead never reaches the numbers.
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.profile_shapes) as prof:
            for _ in range(args.profile):
                train_step(s)
        print(prof.key_averages(group_by_input_shape=args.profile_shapes)
              .table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))
    total = [r["total_ms"] for r in rows]
    ms = statistics.median(total)
    c = s.config
    fl = step_flops(c, s.batch, s.seq, s.rank, middle=True, train_middle=s.train_middle, head_rows=s.head_rows)
    gflops = fl["total"] / (ms / 1e3) / 1e9
    return {
        "preset": s.preset, "model_dir": s.model_dir,
        "config": {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
                   "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
                   "num_key_value_heads": c.num_key_value_heads, "vocab_size": c.vocab_size},
        "batch": s.batch, "seq": s.seq, "rank": s.rank, "train_middle": s.train_middle,
        "head": s.head, "head_rows": s.head_rows,
        "attention": args.attention, "tokens": s.tokens, "response_tokens": s.response_tokens,
        "base_params": s.base_params, "trainable_params": s.trainable_params,
        "warmup": args.warmup, "steps": args.steps, "first_loss": first_loss,
        "ms": {"median": ms, "min": min(total), "max": max(total), "all": total},
        "phase_ms": {k: statistics.median(r[k + "_ms"] for r in rows) for k in ("forward", "backward", "optimizer")},
        "tokens_per_s": s.tokens / (ms / 1e3),
        "flops": fl, "gflops_per_s": gflops,
        "fraction_of_peak": gflops / peak["best_gflops"] if peak else 0.0,
    }


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def run_check(args, s):
    """Repeats bench_step --check's steps and compares: losses, gradient norms, adapters after."""
    ref_path = os.path.join(args.init_dir, f"{s.preset}.check.json")
    ref = None
    if os.path.exists(ref_path):
        with open(ref_path) as f:
            ref = json.load(f)
    steps = ref["check_steps"] if ref else args.check_steps
    losses, norms = [], []
    for _ in range(steps):
        r = train_step(s, want_grad_norm=True)
        losses.append(r["loss"])
        norms.append(r["grad_norm"])
    with torch.no_grad():
        final_loss = step_loss(s.model, s.input_ids, s.attention_mask, s.labels, s.head).item()
    out = {"preset": s.preset, "losses": losses, "grad_norms": norms, "final_loss": final_loss,
           "check_steps": steps, "attention": args.attention}
    print(f"{s.preset:9s} python: losses {' '.join(f'{l:.8f}' for l in losses)}  grad norms "
          f"{' '.join(f'{g:.6g}' for g in norms)}  final {final_loss:.8f}")
    if ref is None:
        print(f"{s.preset:9s} no {ref_path}: nothing to compare (run bench_step --check --export-dir first)")
        return out, True
    cmp = {
        "loss_rel": [rel(a, b) for a, b in zip(losses, ref["losses"])],
        "grad_norm_rel": [rel(a, b) for a, b in zip(norms, ref["grad_norms"])],
        "final_loss_rel": rel(final_loss, ref["final_loss"]),
    }
    after_path = os.path.join(args.init_dir, f"{s.preset}.after.safetensors")
    if os.path.exists(after_path):
        after, _ = load_safetensors(after_path)
        worst_abs, worst_rel, worst_name = 0.0, 0.0, ""
        for name, proj in s.model.projections():
            for key, p in (("lora_A", proj.lora_A), ("lora_B", proj.lora_B), ("middle", proj.middle)):
                theirs = after[f"{name}.{key}"]
                diff = float((p.detach() - theirs).abs().max())
                scale = float(theirs.abs().max())
                if diff > worst_abs:
                    worst_abs, worst_name = diff, f"{name}.{key}"
                worst_rel = max(worst_rel, diff / max(scale, 1e-30))
        # AdamW moves a parameter by about lr per step, so also report the error in units of that.
        cmp.update({"param_max_abs": worst_abs, "param_max_rel": worst_rel, "param_worst": worst_name,
                    "param_max_abs_over_lr": worst_abs / s.lr})
    # Losses and gradient norms to `tolerance` (relative); the adapters after the steps to
    # param_tolerance * lr (absolute). The loss alone is a weak test (a 1e-4 change of rope_theta
    # moves it by < 1e-6); the gradient norms and the updated adapters catch such slips.
    ok = (max(cmp["loss_rel"]) <= args.tolerance and cmp["final_loss_rel"] <= args.tolerance
          and max(cmp["grad_norm_rel"]) <= args.tolerance
          and cmp.get("param_max_abs_over_lr", 0.0) <= args.param_tolerance)
    cmp["tolerance"] = args.tolerance
    cmp["param_tolerance_lr"] = args.param_tolerance
    cmp["ok"] = ok
    out["compare"] = cmp
    print(f"{s.preset:9s} C++    : losses {' '.join(f'{l:.8f}' for l in ref['losses'])}  final "
          f"{ref['final_loss']:.8f}")
    print(f"{s.preset:9s} compare: loss rel diff {' '.join(f'{x:.2e}' for x in cmp['loss_rel'])}, "
          f"final {cmp['final_loss_rel']:.2e}, grad-norm rel {' '.join(f'{x:.2e}' for x in cmp['grad_norm_rel'])}"
          + (f", adapters max|diff| {cmp['param_max_abs']:.2e} (= {cmp['param_max_abs_over_lr']:.3f} lr, "
             f"rel {cmp['param_max_rel']:.2e}, {cmp['param_worst']})" if "param_max_abs" in cmp else "")
          + f"  -> {'OK' if ok else 'MISMATCH'} (tolerance {args.tolerance:g}, adapters "
            f"{args.param_tolerance:g} lr)")
    return out, ok


# ------------------------------------------------------------------------------ trace summary

def summarize_trace(path, rows):
    """Self and total time per op name of a chrome trace (bench_step --profile), nesting by thread."""
    with open(path) as f:
        text = f.read().rstrip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    events = json.loads(text)
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    spans = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            spans[e.get("tid", 0)].append((float(e["ts"]), float(e["dur"]), e["name"]))
    total, self_t, calls = defaultdict(float), defaultdict(float), defaultdict(int)
    for ev in spans.values():
        ev.sort(key=lambda x: (x[0], -x[1]))  # parents (longer) before children starting together
        stack = []  # (end, name) of the enclosing spans
        for ts, dur, name in ev:
            while stack and stack[-1][0] <= ts:
                stack.pop()
            if stack:
                self_t[stack[-1][1]] -= dur  # a direct child's time is not its parent's self time
            self_t[name] += dur
            total[name] += dur
            calls[name] += 1
            stack.append((ts + dur, name))
    all_self = sum(v for v in self_t.values() if v > 0)
    print(f"{path}: {sum(calls.values())} events; self time by op (us), top {rows}")
    print(f"{'op':40s} {'calls':>8s} {'self ms':>10s} {'self %':>7s} {'total ms':>10s}")
    for name, v in sorted(self_t.items(), key=lambda kv: -kv[1])[:rows]:
        print(f"{name[:40]:40s} {calls[name]:8d} {v / 1e3:10.2f} {100 * v / max(all_self, 1e-9):6.1f}% "
              f"{total[name] / 1e3:10.2f}")


# ------------------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="all", help="h2-tiny, h2-small, h2-base, a comma list, or all")
    ap.add_argument("--models-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                                                         "models"))
    ap.add_argument("--init-dir", help="directory with bench_step's <preset>.init.safetensors (same numbers)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="openblas_set_num_threads (0 = leave; set_num_threads does not reach it)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attention", choices=["hf", "grouped"], default="hf",
                    help="hf: transformers' eager attention (repeat_kv); grouped: llama.cpp's exact op sequence")
    ap.add_argument("--head", choices=["rows", "full"], default=None,
                    help="LM head at the response rows only (h2tune's step) or at every position; default: what "
                         "bench_step exported (--init-dir), else rows")
    ap.add_argument("--foreach", action="store_true", help="AdamW(foreach=True) (torch 1.13 default: per tensor)")
    ap.add_argument("--check", action="store_true", help="compare with bench_step --check results in --init-dir")
    ap.add_argument("--check-steps", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1e-5,
                    help="--check: max relative difference of losses and gradient norms")
    ap.add_argument("--param-tolerance", type=float, default=0.5,
                    help="--check: max |adapter difference| after the steps, in units of lr")
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--peak-n", type=int, default=2048)
    ap.add_argument("--peak-reps", type=int, default=5)
    ap.add_argument("--no-mallopt", action="store_true", help="leave glibc malloc at its defaults")
    ap.add_argument("--profile", type=int, default=0, help="after timing, profile this many steps (torch.profiler)")
    ap.add_argument("--profile-rows", type=int, default=25)
    ap.add_argument("--profile-shapes", action="store_true", help="--profile: one row per op and input shapes")
    ap.add_argument("--summarize-trace", help="print a per-op summary of a chrome trace (bench_step --profile)")
    # Only without --init-dir:
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    if args.summarize_trace:
        summarize_trace(args.summarize_trace, args.profile_rows)
        return 0
    if args.check and not args.init_dir:
        ap.error("--check needs --init-dir (where bench_step --check --export-dir wrote its results)")

    mallopt_tuned = not args.no_mallopt
    if mallopt_tuned:
        # As h2tune's main: mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 1 << 30).
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)
        libc.mallopt(-1, 1 << 30)
    threads = set_threads("torch_step.py", args.threads, args.blas_threads)
    presets = ["h2-tiny", "h2-small", "h2-base"] if args.preset == "all" else [p for p in args.preset.split(",") if p]

    env = thread_environment(mallopt_tuned)
    out = {"tool": "torch_step", "impl": "python", "torch_version": torch.__version__, "threads": threads,
           "blas_threads": blas_threads(),
           "python": sys.version.split()[0], "env": env}
    peak = None
    if not args.check and args.peak_n > 0:
        peak = measure_peak(args.peak_n, max(1, args.peak_reps))
        out["peak"] = peak
    results, all_ok = [], True
    for preset in presets:
        s = build_setup(args, preset)
        if args.check:
            r, ok = run_check(args, s)
            all_ok = all_ok and ok
        else:
            r = run_timing(args, s, peak)
        results.append(r)
        sys.stdout.flush()
        del s
    out["check" if args.check else "results"] = results

    if not args.check:
        head = f"\ntorch_step (Python {out['python']} / torch {torch.__version__}, attention {args.attention}), "
        head += f"threads {threads} (OpenBLAS {blas_threads()})"
        if peak:
            head += (f", peak {peak['n']}x{peak['n']} fp32 matmul: best {peak['best_gflops']:.1f} GFLOP/s "
                     f"(median {peak['median_gflops']:.1f})")
        print(head)
        print(f"{'preset':9s} {'tokens':>7s} {'ms/step':>9s} {'fwd ms':>9s} {'bwd ms':>9s} {'opt ms':>9s} "
              f"{'tok/s':>10s} {'GFLOP':>9s} {'GFLOP/s':>9s} {'%peak':>7s}")
        for r in results:
            print(f"{r['preset']:9s} {r['tokens']:7d} {r['ms']['median']:9.2f} {r['phase_ms']['forward']:9.2f} "
                  f"{r['phase_ms']['backward']:9.2f} {r['phase_ms']['optimizer']:9.2f} {r['tokens_per_s']:10.1f} "
                  f"{r['flops']['total'] / 1e9:9.3f} {r['gflops_per_s']:9.2f} {100 * r['fraction_of_peak']:6.1f}%")
    if args.json:
        write_json(args.json, out)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
