#include "h2tune/model/llama.h"

#include <cmath>

#include <torch/torch.h>
#include <torch/version.h>

#include <limits>

#include "h2tune/core/error.h"
#include "h2tune/core/shape_text.h"
#include "h2tune/model/block_checkpoint.h"

namespace h2tune {

namespace {

// Added to the scores of masked keys. Finite, unlike -inf, so that a query whose keys are all
// masked (a padding position) gets a uniform, NaN-free distribution instead of 0/0; its output is
// never read by real tokens because padding keys are masked for everyone. Masks and softmax are
// float32 in every model dtype, so the value is representable whatever the weights are.
constexpr double kMaskValue = -1e30;

bool is_float32(const torch::Tensor& t) { return t.scalar_type() == torch::kFloat32; }

// Positions below this get precomputed cos/sin rows; beyond it (long-context checkpoints) the
// same values are computed per call, so a 128k-position model does not hold 128k-row tables.
constexpr int64_t kMaxCachedPositions = 8192;

}  // namespace

// ---------------------------------------------------------------- Projection

std::vector<torch::Tensor> ProjectionAdapter::differentiable_tensors() const {
    throw ModelError("activation checkpointing: this projection adapter does not list the tensors it differentiates "
                     "(override ProjectionAdapter::differentiable_tensors), so their gradients cannot be routed "
                     "through a recomputed block; turn activation checkpointing off");
}

ProjectionImpl::ProjectionImpl(const ProjectionOptions& options_) : options(options_) { reset(); }

void ProjectionImpl::reset() {
    if (options.in_features() <= 0 || options.out_features() <= 0)
        throw ModelError("Projection: in_features and out_features must be positive (got " +
                         std::to_string(options.in_features()) + ", " + std::to_string(options.out_features()) + ")");
    const auto topts = torch::TensorOptions().dtype(options.dtype());
    weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}, topts));
    if (options.bias()) bias = register_parameter("bias", torch::empty({options.out_features()}, topts));
    if (options.initialise()) reset_parameters();
}

void ProjectionImpl::reset_parameters() {
    torch::NoGradGuard no_grad;
    weight.normal_(0.0, options.init_std());
    if (bias.defined()) bias.zero_();
}

void ProjectionImpl::pretty_print(std::ostream& stream) const {
    stream << "h2tune::Projection(in_features=" << options.in_features()
           << ", out_features=" << options.out_features() << ", bias=" << (bias.defined() ? "true" : "false")
           << ", adapter=" << (adapter_ ? "yes" : "none") << ")";
}

torch::Tensor ProjectionImpl::forward(const torch::Tensor& x) {
    torch::Tensor y = torch::linear(x, weight, bias);
    if (!adapter_) return y;
    // Adapters are float32 whatever the base stores; PEFT casts the same way.
    const torch::Tensor d = is_float32(x) ? adapter_->delta(x) : adapter_->delta(x.to(torch::kFloat32));
    if (d.sizes() != y.sizes())
        throw ModelError("Projection: adapter delta has shape " + shape_string(d.sizes()) + ", expected " +
                         shape_string(y.sizes()));
    // In place is safe: y is linear's fresh output, which its backward does not need.
    return d.scalar_type() == y.scalar_type() ? y.add_(d) : y.add_(d.to(y.scalar_type()));
}

// ---------------------------------------------------------------- RMSNorm

void RMSNormImpl::reset() {
    if (options.dim() <= 0) throw ModelError("RMSNorm: dim must be positive");
    const auto topts = torch::TensorOptions().dtype(options.dtype());
    weight = register_parameter("weight", options.unit_offset() ? torch::zeros({options.dim()}, topts)
                                                                : torch::ones({options.dim()}, topts));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
    // Hugging Face's order of operations and float32 islands, so real checkpoints reproduce their
    // logits in every dtype (in float32 the casts are no-ops).
    const torch::Tensor x32 = is_float32(x) ? x : x.to(torch::kFloat32);
    const torch::Tensor normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + options.eps());
    if (options.unit_offset()) {
        const torch::Tensor out = normed * (1.0 + weight.to(torch::kFloat32));
        return is_float32(x) ? out : out.to(x.scalar_type());
    }
    return weight * (is_float32(x) ? normed : normed.to(x.scalar_type()));
}

// ---------------------------------------------------------------- TokenEmbedding

void TokenEmbeddingImpl::reset() {
    if (vocab_size_ <= 0 || hidden_size_ <= 0) throw ModelError("TokenEmbedding: sizes must be positive");
    weight = register_parameter("weight", torch::empty({vocab_size_, hidden_size_},
                                                       torch::TensorOptions().dtype(init_.dtype)));
    if (init_.random) reset_parameters();
}

void TokenEmbeddingImpl::reset_parameters() {
    torch::NoGradGuard no_grad;
    weight.normal_(0.0, init_std_);
}

// ---------------------------------------------------------------- rotary embeddings

torch::Tensor rotate_half(const torch::Tensor& x) {
    const int64_t half = x.size(-1) / 2;
    return torch::cat({x.slice(-1, half).neg(), x.slice(-1, 0, half)}, -1);
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
    // The float32 tables are cast to x's dtype first, as transformers does.
    torch::Tensor c = cos.unsqueeze(2), s = sin.unsqueeze(2);  // broadcast over heads
    if (c.scalar_type() != x.scalar_type()) {
        c = c.to(x.scalar_type());
        s = s.to(x.scalar_type());
    }
    return x * c + rotate_half(x) * s;
}

void RotaryEmbeddingImpl::reset() {
    const int64_t dim = config_.head_dim();
    const auto fopts = torch::TensorOptions().dtype(torch::kFloat32);
    // inv_freq = 1 / theta^(2i/dim), computed in float32 exactly as transformers does.
    const torch::Tensor exponent = torch::arange(0, dim, 2, torch::kLong).to(torch::kFloat32) / static_cast<double>(dim);
    torch::Tensor inv = torch::reciprocal(torch::pow(config_.rope_theta, exponent));

    const RopeScaling& rs = config_.rope_scaling;
    if (rs.rope_type == "linear") {
        inv = inv / rs.factor;
    } else if (rs.rope_type == "llama3") {
        // transformers' _compute_llama3_parameters: long wavelengths slowed by `factor`, short
        // ones kept, a smooth interpolation between.
        const double old_len = static_cast<double>(rs.original_max_position_embeddings);
        const double low_wavelen = old_len / rs.low_freq_factor;
        const double high_wavelen = old_len / rs.high_freq_factor;
        const torch::Tensor wavelen = 2.0 * M_PI / inv;
        torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv / rs.factor, inv);
        const torch::Tensor smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        const torch::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
        const torch::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
        inv = torch::where(medium, smoothed, scaled);
    }
    inv_freq = register_buffer("inv_freq", inv.contiguous());

    const int64_t rows = std::min(config_.max_position_embeddings, kMaxCachedPositions);
    const torch::Tensor t = torch::arange(rows, fopts);
    const torch::Tensor freqs = torch::outer(t, inv_freq);
    const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
    cos_cached = register_buffer("cos_cached", emb.cos());
    sin_cached = register_buffer("sin_cached", emb.sin());
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbeddingImpl::forward(const torch::Tensor& position_ids,
                                                                     int64_t max_position) {
    const int64_t dim = config_.head_dim();
    if (max_position < 0) max_position = position_ids.max().item<int64_t>();
    if (max_position < cos_cached.size(0)) {
        const torch::Tensor flat = position_ids.reshape({-1});
        const std::vector<int64_t> shape{position_ids.size(0), position_ids.size(1), dim};
        return {cos_cached.index_select(0, flat).view(shape), sin_cached.index_select(0, flat).view(shape)};
    }
    const torch::Tensor freqs = position_ids.to(torch::kFloat32).unsqueeze(-1) * inv_freq;
    const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
    return {emb.cos(), emb.sin()};
}

// ---------------------------------------------------------------- attention

// scaled_dot_product_attention takes an explicit scale from LibTorch 2.1 on (Gemma's
// query_pre_attn_scalar needs it); 2.0's would be usable only at head_dim^-1/2.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define H2TUNE_HAS_SDPA 1
#else
#define H2TUNE_HAS_SDPA 0
#endif

bool fused_attention_available() { return H2TUNE_HAS_SDPA != 0; }

torch::Tensor llama_group_mask(const torch::Tensor& mask, int64_t num_key_value_heads, int64_t groups) {
    // mask [Bm, 1, T, S] with Bm = B or 1.
    const int64_t bm = mask.size(0), t = mask.size(2), s = mask.size(3);
    if (bm == 1) return mask.unsqueeze(1).expand({1, 1, groups, t, s}).reshape({1, groups * t, s});
    return mask.unsqueeze(1).expand({bm, num_key_value_heads, groups, t, s}).reshape({bm * num_key_value_heads, groups * t, s});
}

namespace {

ProjectionOptions projection_options(const LlamaConfig& config, const ParameterInit& init, int64_t in, int64_t out,
                                     bool bias) {
    return ProjectionOptions(in, out).init_std(config.initializer_range).bias(bias).dtype(init.dtype).initialise(
        init.random);
}

}  // namespace

void LlamaAttentionImpl::reset() {
    const int64_t h = config.hidden_size, d = config.head_dim();
    const bool qkv_bias = config.q_proj_has_bias();
    auto opts = [&](int64_t in, int64_t out, bool bias) { return projection_options(config, init, in, out, bias); };
    q_proj = register_module("q_proj", Projection(opts(h, config.num_attention_heads * d, qkv_bias)));
    k_proj = register_module("k_proj", Projection(opts(h, config.num_key_value_heads * d, qkv_bias)));
    v_proj = register_module("v_proj", Projection(opts(h, config.num_key_value_heads * d, qkv_bias)));
    o_proj = register_module("o_proj", Projection(opts(config.num_attention_heads * d, h, config.attention_bias)));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          const torch::Tensor& mask, torch::Tensor* cache_k, torch::Tensor* cache_v) {
    const int64_t b = x.size(0), t = x.size(1);
    const int64_t heads = config.num_attention_heads, kv_heads = config.num_key_value_heads;
    const int64_t groups = heads / kv_heads, d = config.head_dim();

    const torch::Tensor q = apply_rotary(q_proj->forward(x).view({b, t, heads, d}), cos, sin);
    torch::Tensor k = apply_rotary(k_proj->forward(x).view({b, t, kv_heads, d}), cos, sin).transpose(1, 2);
    torch::Tensor v = v_proj->forward(x).view({b, t, kv_heads, d}).transpose(1, 2);  // [B, KV, T, D]
    if (cache_k != nullptr) {
        if (cache_k->defined()) {
            k = torch::cat({*cache_k, k}, 2);
            v = torch::cat({*cache_v, v}, 2);
        } else {
            k = k.contiguous();
            v = v.contiguous();
        }
        *cache_k = k;
        *cache_v = v;
    }
    const int64_t s = k.size(2);

    // Head h = kv * groups + g uses key/value head kv (HF repeat_kv order). Stack each group's
    // query rows: [B, T, KV, G, D] -> [B*KV, G*T, D].
    const torch::Tensor q3 = q.view({b, t, kv_heads, groups, d}).permute({0, 2, 3, 1, 4}).reshape({b * kv_heads, groups * t, d});
    const torch::Tensor k3t = k.reshape({b * kv_heads, s, d}).transpose(1, 2);
    const torch::Tensor v3 = v.reshape({b * kv_heads, s, d});
    const double scale_base = config.query_pre_attn_scalar > 0.0 ? config.query_pre_attn_scalar : static_cast<double>(d);
    const double scale = 1.0 / std::sqrt(scale_base);
    const double cap = config.attn_logit_softcapping;
    const torch::Tensor grouped =
        !mask.defined() ? torch::Tensor() : (mask.dim() == 3 ? mask : llama_group_mask(mask, kv_heads, groups));

#if H2TUNE_HAS_SDPA
    if (fused && cap <= 0.0) {
        // The grouped layout as 4-d tensors: each key/value head's G query heads stacked along the
        // rows, [B, KV, G*T, D] against [B, KV, S, D] keys and values, so K and V are not repeated
        // per query head; the additive mask [B or 1, KV or 1, G*T, S] in the query's dtype (float16
        // would turn kMaskValue into -inf and a fully masked padding row into NaN: clamp it).
        const torch::Tensor q4 = q3.view({b, kv_heads, groups * t, d});
        const torch::Tensor k4 = k.reshape({b, kv_heads, s, d}), v4 = v.reshape({b, kv_heads, s, d});
        c10::optional<torch::Tensor> mask4;
        if (grouped.defined()) {
            const bool per_row = grouped.size(0) != 1;
            torch::Tensor m = grouped.view({per_row ? b : 1, per_row ? kv_heads : 1, groups * t, s});
            if (q4.scalar_type() == torch::kFloat16)
                m = m.clamp_min(static_cast<double>(std::numeric_limits<c10::Half>::lowest()));
            mask4 = m.scalar_type() == q4.scalar_type() ? m : m.to(q4.scalar_type());
        }
        const torch::Tensor attended = at::scaled_dot_product_attention(q4, k4, v4, mask4, /*dropout_p=*/0.0,
                                                                         /*is_causal=*/false, scale);
        return o_proj->forward(attended.view({b, kv_heads, groups, t, d}).permute({0, 3, 1, 2, 4}).reshape({b, t, heads * d}));
    }
#endif
    torch::Tensor scores;
    if (is_float32(q3) && cap <= 0.0) {
        // One kernel: mask + scale * q k^T.
        scores = grouped.defined() ? torch::baddbmm(grouped, q3, k3t, /*beta=*/1.0, /*alpha=*/scale)
                                   : torch::bmm(q3, k3t).mul_(scale);
    } else {
        // Scores in the compute dtype as transformers forms them, then soft-capping, mask and
        // softmax in float32.
        scores = torch::bmm(q3, k3t).mul_(scale).to(torch::kFloat32);
        if (cap > 0.0) scores = torch::tanh(scores / cap) * cap;
        if (grouped.defined()) scores = scores + grouped;
    }
    torch::Tensor probs = torch::softmax(scores, -1);
    if (probs.scalar_type() != v3.scalar_type()) probs = probs.to(v3.scalar_type());
    const torch::Tensor out = torch::bmm(probs, v3)  // [B*KV, G*T, D]
                                  .view({b, kv_heads, groups, t, d})
                                  .permute({0, 3, 1, 2, 4})
                                  .reshape({b, t, heads * d});
    return o_proj->forward(out);
}

// ---------------------------------------------------------------- MLP, decoder layer

void LlamaMLPImpl::reset() {
    const int64_t h = config.hidden_size, f = config.intermediate_size;
    auto opts = [&](int64_t in, int64_t out) { return projection_options(config, init, in, out, config.mlp_bias); };
    gate_proj = register_module("gate_proj", Projection(opts(h, f)));
    up_proj = register_module("up_proj", Projection(opts(h, f)));
    down_proj = register_module("down_proj", Projection(opts(f, h)));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
    const torch::Tensor gate = gate_proj->forward(x);
    torch::Tensor activated;
    if (config.hidden_act == "silu")
        activated = torch::silu(gate);
    else if (config.hidden_act == "gelu_pytorch_tanh")
        activated = torch::gelu(gate, "tanh");
    else if (config.hidden_act == "gelu")
        activated = torch::gelu(gate);
    else
        throw ModelError("MLP: activation '" + config.hidden_act + "' is not supported");
    return down_proj->forward(activated * up_proj->forward(x));
}

void LlamaDecoderLayerImpl::reset() {
    // Registration order = Hugging Face's parameter order.
    self_attn = register_module("self_attn", LlamaAttention(config, init));
    mlp = register_module("mlp", LlamaMLP(config, init));
    const auto norm_opts = RMSNormOptions(config.hidden_size)
                               .eps(config.rms_norm_eps)
                               .unit_offset(config.norm_unit_offset)
                               .dtype(init.dtype);
    input_layernorm = register_module("input_layernorm", RMSNorm(norm_opts));
    post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(norm_opts));
    if (config.sandwich_norms) {
        pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", RMSNorm(norm_opts));
        post_feedforward_layernorm = register_module("post_feedforward_layernorm", RMSNorm(norm_opts));
    }
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                             const torch::Tensor& sin, const torch::Tensor& mask,
                                             torch::Tensor* cache_k, torch::Tensor* cache_v) {
    const torch::Tensor attn = self_attn->forward(input_layernorm->forward(x), cos, sin, mask, cache_k, cache_v);
    if (!config.sandwich_norms) {
        const torch::Tensor h = x + attn;
        return h + mlp->forward(post_attention_layernorm->forward(h));
    }
    const torch::Tensor h = x + post_attention_layernorm->forward(attn);
    return h + post_feedforward_layernorm->forward(mlp->forward(pre_feedforward_layernorm->forward(h)));
}

std::vector<torch::Tensor> LlamaDecoderLayerImpl::differentiable_tensors() const {
    std::vector<torch::Tensor> out;
    // The block's own parameters (projections and norms; adapters are not registered submodules,
    // so none of theirs is listed twice) when they are trained, as in pretraining.
    for (const torch::Tensor& p : parameters())
        if (p.requires_grad()) out.push_back(p);
    for (const Projection& p : {self_attn->q_proj, self_attn->k_proj, self_attn->v_proj, self_attn->o_proj,
                                mlp->gate_proj, mlp->up_proj, mlp->down_proj})
        if (p->adapter())
            for (torch::Tensor& t : p->adapter()->differentiable_tensors()) out.push_back(std::move(t));
    return out;
}

// ---------------------------------------------------------------- KV cache

void KvCache::clear() {
    keys.clear();
    values.clear();
    mask = torch::Tensor();
}

KvCache KvCache::index_select(const torch::Tensor& rows) const {
    if (empty()) throw ModelError("KvCache::index_select: the cache is empty");
    const torch::Tensor idx = rows.to(mask.device(), torch::kLong);
    KvCache out;
    out.keys.reserve(keys.size());
    out.values.reserve(values.size());
    for (const auto& k : keys) out.keys.push_back(k.index_select(0, idx));
    for (const auto& v : values) out.values.push_back(v.index_select(0, idx));
    out.mask = mask.index_select(0, idx);
    return out;
}

KvCache KvCache::repeat_interleave(int64_t n) const {
    if (n <= 0) throw ModelError("KvCache::repeat_interleave: n must be positive (got " + std::to_string(n) + ")");
    if (empty()) throw ModelError("KvCache::repeat_interleave: the cache is empty");
    const auto opts = torch::TensorOptions().dtype(torch::kLong).device(mask.device());
    // rows 0..B-1 each n times: arange(B*n) / n.
    return index_select(torch::arange(batch_size() * n, opts).div(n, "floor"));
}

// ---------------------------------------------------------------- LlamaModel

void LlamaModelImpl::reset() {
    config.validate();
    embed_tokens = register_module(
        "embed_tokens", TokenEmbedding(config.vocab_size, config.hidden_size, config.initializer_range, init));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(config, init));
    norm = register_module("norm", RMSNorm(RMSNormOptions(config.hidden_size)
                                               .eps(config.rms_norm_eps)
                                               .unit_offset(config.norm_unit_offset)
                                               .dtype(init.dtype)));
    rotary_emb = register_module("rotary_emb", RotaryEmbedding(config));
}

void LlamaModelImpl::reset_parameters() {
    torch::NoGradGuard no_grad;
    embed_tokens->reset_parameters();
    const double norm_init = config.norm_unit_offset ? 0.0 : 1.0;  // the identity norm either way
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
        const LlamaDecoderLayer l = layer(i);
        for (Projection p : {l->self_attn->q_proj, l->self_attn->k_proj, l->self_attn->v_proj, l->self_attn->o_proj,
                             l->mlp->gate_proj, l->mlp->up_proj, l->mlp->down_proj})
            p->reset_parameters();
        for (RMSNorm n : {l->input_layernorm, l->post_attention_layernorm, l->pre_feedforward_layernorm,
                          l->post_feedforward_layernorm})
            if (n) n->weight.fill_(norm_init);
    }
    norm->weight.fill_(norm_init);
}

void LlamaModelImpl::set_fused_attention(bool on) {
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) layer(i)->self_attn->fused = on && fused_attention_available();
}

LlamaDecoderLayer LlamaModelImpl::layer(int64_t i) const {
    if (i < 0 || i >= static_cast<int64_t>(layers->size()))
        throw ModelError("layer index " + std::to_string(i) + " out of range (model has " +
                         std::to_string(layers->size()) + " layers)");
    return LlamaDecoderLayer(layers->ptr<LlamaDecoderLayerImpl>(static_cast<size_t>(i)));
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                      const torch::Tensor& position_ids, KvCache* cache) {
    if (!input_ids.defined() || input_ids.dim() != 2)
        throw ModelError("llama forward: input_ids must be [batch, time], got " +
                         (input_ids.defined() ? shape_string(input_ids.sizes()) : std::string("undefined")));
    if (input_ids.scalar_type() != torch::kLong && input_ids.scalar_type() != torch::kInt)
        throw ModelError("llama forward: input_ids must be int64 (or int32)");
    const int64_t b = input_ids.size(0), t = input_ids.size(1);
    if (b == 0 || t == 0) throw ModelError("llama forward: empty input " + shape_string(input_ids.sizes()));
    const torch::Device dev = input_ids.device();
    const auto lopts = torch::TensorOptions().dtype(torch::kLong).device(dev);
    {
        const int64_t lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
        if (lo < 0 || hi >= config.vocab_size)
            throw ModelError("llama forward: token id " + std::to_string(lo < 0 ? lo : hi) + " outside the vocabulary [0, " +
                             std::to_string(config.vocab_size) + ")");
    }

    const bool use_cache = cache != nullptr;
    const int64_t past = use_cache ? cache->length() : 0;
    if (use_cache && !cache->empty()) {
        if (cache->batch_size() != b)
            throw ModelError("llama forward: cache holds " + std::to_string(cache->batch_size()) +
                             " rows but input_ids has " + std::to_string(b));
        if (static_cast<int64_t>(cache->keys.size()) != config.num_hidden_layers ||
            cache->values.size() != cache->keys.size())
            throw ModelError("llama forward: cache has " + std::to_string(cache->keys.size()) + " layers, model " +
                             std::to_string(config.num_hidden_layers));
    }

    // Key mask over past + current tokens (int64 1/0), or undefined when every token is real and
    // there is no cache to record it in.
    torch::Tensor key_mask;
    if (attention_mask.defined()) {
        if (attention_mask.dim() != 2 || attention_mask.size(0) != b ||
            (attention_mask.size(1) != t && attention_mask.size(1) != past + t))
            throw ModelError("llama forward: attention_mask " + shape_string(attention_mask.sizes()) + " must be [" +
                             std::to_string(b) + ", " + std::to_string(t) + "]" +
                             (past ? " or [" + std::to_string(b) + ", " + std::to_string(past + t) + "]" : ""));
        const torch::Tensor m = attention_mask.ne(0).to(torch::kLong);
        if (m.size(1) == past + t)
            key_mask = m;
        else
            key_mask = past ? torch::cat({cache->mask, m}, 1) : m;
    } else if (use_cache) {
        const torch::Tensor ones = torch::ones({b, t}, lopts);
        key_mask = past ? torch::cat({cache->mask, ones}, 1) : ones;
    }

    torch::Tensor pos;
    if (position_ids.defined()) {
        if (position_ids.dim() != 2 || (position_ids.size(0) != b && position_ids.size(0) != 1) ||
            position_ids.size(1) != t)
            throw ModelError("llama forward: position_ids " + shape_string(position_ids.sizes()) + " must be [" +
                             std::to_string(b) + " or 1, " + std::to_string(t) + "]");
        pos = position_ids.to(torch::kLong);
    } else if (key_mask.defined()) {
        // Real tokens count 0, 1, 2, ... whatever padding sits before them.
        pos = (key_mask.cumsum(1) - 1).clamp_min(0).slice(1, past);
    } else {
        pos = torch::arange(past, past + t, lopts).unsqueeze(0);
    }
    const int64_t pos_min = pos.min().item<int64_t>(), pos_max = pos.max().item<int64_t>();
    if (pos_min < 0 || pos_max >= config.max_position_embeddings)
        throw ModelError("llama forward: position " + std::to_string(pos_min < 0 ? pos_min : pos_max) +
                         " outside [0, max_position_embeddings=" + std::to_string(config.max_position_embeddings) + ")");

    // Additive masks: causal by index in the (cached + current) sequence, plus key padding; the
    // sliding-window layers' mask also hides keys `sliding_window` or more indices back (as
    // transformers does for Mistral and Gemma 2). Built only when some key is hidden.
    const int64_t s = past + t;
    const bool window_hides = config.sliding_window > 0 && s > config.sliding_window;
    torch::Tensor full_mask, window_mask;
    auto additive_mask = [&](bool windowed) {
        const torch::Tensor key_index = torch::arange(s, lopts).unsqueeze(0);
        const torch::Tensor query_index = torch::arange(past, s, lopts).unsqueeze(1);
        torch::Tensor allowed = key_index.le(query_index);
        if (windowed) allowed = allowed.logical_and(key_index.gt(query_index - config.sliding_window));
        allowed = key_mask.defined() ? allowed.unsqueeze(0).logical_and(key_mask.to(torch::kBool).unsqueeze(1))
                                     : allowed.unsqueeze(0);  // [B or 1, T, S]
        const torch::Tensor additive =
            torch::zeros(allowed.sizes(), torch::TensorOptions().dtype(torch::kFloat32).device(dev))
                .masked_fill_(allowed.logical_not(), kMaskValue)
                .unsqueeze(1);  // [B or 1, 1, T, S]
        return llama_group_mask(additive, config.num_key_value_heads,
                                config.num_attention_heads / config.num_key_value_heads);
    };
    if (t > 1 || key_mask.defined()) full_mask = additive_mask(false);
    if (window_hides) window_mask = additive_mask(true);

    const auto [cos_t, sin_t] = rotary_emb->forward(pos, pos_max);
    if (use_cache && cache->empty()) {
        cache->keys.assign(static_cast<size_t>(config.num_hidden_layers), torch::Tensor());
        cache->values.assign(static_cast<size_t>(config.num_hidden_layers), torch::Tensor());
    }
    torch::Tensor h = embed_tokens->forward(input_ids);
    if (config.scale_embeddings) {
        // Gemma multiplies by sqrt(hidden) rounded to the compute dtype (45.25 in bfloat16 for 2048).
        const torch::Tensor normalizer =
            torch::tensor(std::sqrt(static_cast<double>(config.hidden_size)), torch::TensorOptions().dtype(h.scalar_type()))
                .to(h.device());
        h = h * normalizer;
    }
    // Checkpointing needs a graph being recorded and no cache (the blocks would append to it twice).
    // Whether anything in a block requires grad is checkpoint_block's test; it runs the block
    // plainly otherwise. Base parameters that require grad are among the block's differentiable
    // tensors, so pretraining with checkpointing gets the same gradients too.
    const bool checkpoint = activation_checkpointing_ && !use_cache && torch::GradMode::is_enabled();
    for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
        const auto li = static_cast<size_t>(i);
        const torch::Tensor& mask = window_hides && config.layer_slides(i) ? window_mask : full_mask;
        if (checkpoint) {
            const std::shared_ptr<LlamaDecoderLayerImpl> block = layer(i).ptr();
            CheckpointedBlock checkpointed;
            checkpointed.run = [block](const torch::Tensor& x, const std::vector<torch::Tensor>& c) {
                return block->forward(x, c[0], c[1], c[2]);
            };
            checkpointed.differentiable_tensors = [block] { return block->differentiable_tensors(); };
            h = checkpoint_block(checkpointed, h, {cos_t, sin_t, mask});
            continue;
        }
        h = layer(i)->forward(h, cos_t, sin_t, mask, use_cache ? &cache->keys[li] : nullptr,
                              use_cache ? &cache->values[li] : nullptr);
    }
    if (use_cache) cache->mask = key_mask;
    return norm->forward(h);
}

// ---------------------------------------------------------------- LlamaForCausalLM

const std::vector<std::string>& llama_projection_names() {
    static const std::vector<std::string> names{"q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};
    return names;
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& config, ParameterInit init)
    : config_(config), init_(init) {
    reset();
}

void LlamaForCausalLMImpl::reset() {
    config_.validate();
    model = register_module("model", LlamaModel(config_, init_));
    if (config_.tie_word_embeddings) {
        lm_head = nullptr;
    } else {
        lm_head = register_module("lm_head", Projection(projection_options(config_, init_, config_.hidden_size,
                                                                            config_.vocab_size, false)));
    }
}

void LlamaForCausalLMImpl::reset_parameters() {
    model->reset_parameters();
    if (lm_head) lm_head->reset_parameters();
}

torch::Tensor LlamaForCausalLMImpl::output_weight() const {
    return lm_head ? lm_head->weight : model->embed_tokens->weight;
}

torch::Tensor LlamaForCausalLMImpl::logits(const torch::Tensor& hidden) {
    torch::Tensor out = torch::linear(hidden, output_weight());
    if (!is_float32(out)) out = out.to(torch::kFloat32);
    const double cap = config_.final_logit_softcapping;
    if (cap > 0.0) out = torch::tanh(out / cap) * cap;
    return out;
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                            const torch::Tensor& position_ids) {
    return logits(forward_hidden(input_ids, attention_mask, position_ids));
}

torch::Tensor LlamaForCausalLMImpl::forward_hidden(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                                   const torch::Tensor& position_ids) {
    return model->forward(input_ids, attention_mask, position_ids, nullptr);
}

torch::Tensor LlamaForCausalLMImpl::forward_with_cache(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                                       const torch::Tensor& position_ids, KvCache* cache) {
    if (cache == nullptr) throw ModelError("forward_with_cache: cache is null");
    return logits(model->forward(input_ids, attention_mask, position_ids, cache));
}

std::vector<std::pair<std::string, Projection>> LlamaForCausalLMImpl::projections() const {
    std::vector<std::pair<std::string, Projection>> out;
    out.reserve(static_cast<size_t>(7 * num_layers()));
    for (int64_t i = 0; i < num_layers(); ++i) {
        const LlamaDecoderLayer l = model->layer(i);
        const std::string prefix = "model.layers." + std::to_string(i) + ".";
        out.emplace_back(prefix + "self_attn.q_proj", l->self_attn->q_proj);
        out.emplace_back(prefix + "self_attn.k_proj", l->self_attn->k_proj);
        out.emplace_back(prefix + "self_attn.v_proj", l->self_attn->v_proj);
        out.emplace_back(prefix + "self_attn.o_proj", l->self_attn->o_proj);
        out.emplace_back(prefix + "mlp.gate_proj", l->mlp->gate_proj);
        out.emplace_back(prefix + "mlp.up_proj", l->mlp->up_proj);
        out.emplace_back(prefix + "mlp.down_proj", l->mlp->down_proj);
    }
    return out;
}

Projection LlamaForCausalLMImpl::projection(int64_t layer, const std::string& module) const {
    const LlamaDecoderLayer l = model->layer(layer);
    if (module == "q_proj") return l->self_attn->q_proj;
    if (module == "k_proj") return l->self_attn->k_proj;
    if (module == "v_proj") return l->self_attn->v_proj;
    if (module == "o_proj") return l->self_attn->o_proj;
    if (module == "gate_proj") return l->mlp->gate_proj;
    if (module == "up_proj") return l->mlp->up_proj;
    if (module == "down_proj") return l->mlp->down_proj;
    throw ModelError("unknown projection '" + module +
                     "' (valid: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)");
}

}  // namespace h2tune
