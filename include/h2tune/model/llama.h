// The decoder of every supported family (Llama, Qwen2, Mistral, Gemma, Gemma 2: RMSNorm, rotary
// position embeddings, grouped-query attention, a gated MLP) in LibTorch's module idiom (Impl +
// TORCH_MODULE, parameters registered in reset()). The family's traits come from LlamaConfig
// (llama_config.h); the structure is one. Parameter names are exactly Hugging Face's
// *ForCausalLM names, so model.safetensors files move both ways between h2tune and `transformers`:
//
//   model.embed_tokens.weight
//   model.layers.N.self_attn.{q,k,v,o}_proj.{weight,bias}    (bias: Qwen2 q/k/v, attention_bias)
//   model.layers.N.mlp.{gate,up,down}_proj.{weight,bias}     (bias: mlp_bias)
//   model.layers.N.{input,post_attention}_layernorm.weight
//   model.layers.N.{pre,post}_feedforward_layernorm.weight   (Gemma 2)
//   model.norm.weight
//   lm_head.weight                        (absent when tie_word_embeddings)
//
// Every adaptable linear map is a Projection (projection.h); adapters attach there.
// Parameters are stored in ParameterInit::dtype (float32 by default; bfloat16/float16 for a frozen
// base) and the forward computes in that dtype with Hugging Face's float32 islands (norms,
// softmax, rotary tables); logits are returned in float32.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "h2tune/model/llama_config.h"
#include "h2tune/model/projection.h"

namespace h2tune {

// How a model's parameters are created: the storage dtype, and whether they are drawn (Hugging
// Face's initialisation) or only allocated because a checkpoint is about to overwrite every one.
struct ParameterInit {
    torch::Dtype dtype = torch::kFloat32;
    bool random = true;
};

// ---------------------------------------------------------------- building blocks

struct RMSNormOptions {
    explicit RMSNormOptions(int64_t dim) : dim_(dim) {}
    TORCH_ARG(int64_t, dim);
    TORCH_ARG(double, eps) = 1e-5;
    // Gemma's form: x_hat * (1 + weight) with the weight stored as an offset (initialised to 0).
    TORCH_ARG(bool, unit_offset) = false;
    TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
};

// Llama: y = weight * (x / sqrt(mean(x^2) + eps)).to(x's dtype), the statistics in float32;
// Gemma (unit_offset): y = (x_hat * (1 + weight)) in float32, then to x's dtype.
class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
public:
    explicit RMSNormImpl(const RMSNormOptions& options_) : options(options_) { reset(); }
    void reset() override;
    torch::Tensor forward(const torch::Tensor& x);

    RMSNormOptions options;
    torch::Tensor weight;  // [dim], ones (zeros with unit_offset)
};
TORCH_MODULE(RMSNorm);

// The token embedding table (a parameter `weight` [vocab, hidden]); unlike torch::nn::Embedding it
// can be created in any dtype without drawing a float32 table first.
class TokenEmbeddingImpl : public torch::nn::Cloneable<TokenEmbeddingImpl> {
public:
    TokenEmbeddingImpl(int64_t vocab_size, int64_t hidden_size, double init_std, ParameterInit init = {})
        : vocab_size_(vocab_size), hidden_size_(hidden_size), init_std_(init_std), init_(init) { reset(); }
    void reset() override;
    void reset_parameters();  // normal(0, init_std)
    torch::Tensor forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }

    torch::Tensor weight;

private:
    int64_t vocab_size_, hidden_size_;
    double init_std_;
    ParameterInit init_;
};
TORCH_MODULE(TokenEmbedding);

// Hugging Face's rotate_half: [x1, x2] -> [-x2, x1] on the last dimension's halves.
torch::Tensor rotate_half(const torch::Tensor& x);
// x * cos + rotate_half(x) * sin. x: [B, T, heads, head_dim]; cos, sin: [B or 1, T, head_dim].
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// cos/sin tables of the rotary embedding, precomputed for positions below
// min(max_position_embeddings, 8192) (buffers cos_cached, sin_cached [P, head_dim]); positions
// above that (real long-context checkpoints) are computed on the fly with the same arithmetic.
class RotaryEmbeddingImpl : public torch::nn::Cloneable<RotaryEmbeddingImpl> {
public:
    explicit RotaryEmbeddingImpl(const LlamaConfig& config) : config_(config) { reset(); }
    void reset() override;
    // position_ids [B or 1, T] int64 -> (cos, sin), each [B or 1, T, head_dim] float32.
    // `max_position` is position_ids.max() when the caller already knows it, else -1.
    std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& position_ids, int64_t max_position = -1);

    torch::Tensor inv_freq;                // [head_dim / 2]
    torch::Tensor cos_cached, sin_cached;  // [P, head_dim]

private:
    LlamaConfig config_;
};
TORCH_MODULE(RotaryEmbedding);

// Additive attention mask [B or 1, 1, T, S] -> [B * kv_heads or 1, groups * T, S], the layout in
// which attention computes: the query heads sharing a key/value head are stacked along the rows so
// one batched matmul serves the group without copying K and V per head (no repeat_kv).
torch::Tensor llama_group_mask(const torch::Tensor& mask, int64_t num_key_value_heads, int64_t groups);

// Whether this build's LibTorch has scaled_dot_product_attention with an explicit scale (>= 2.1);
// LibTorch 1.13 does not, and attention is then always the written-out path.
bool fused_attention_available();

// Multi-head attention with grouped key/value heads (num_key_value_heads <= num_attention_heads),
// scores scaled by head_dim^-1/2 (Gemma 2: query_pre_attn_scalar^-1/2) and soft-capped when the
// config says so. Sliding-window layers get their window through the mask the model passes.
class LlamaAttentionImpl : public torch::nn::Cloneable<LlamaAttentionImpl> {
public:
    explicit LlamaAttentionImpl(const LlamaConfig& config, ParameterInit init = {}) : config(config), init(init) {
        reset();
    }
    void reset() override;
    // x [B, T, hidden]; cos/sin from RotaryEmbedding; mask additive (0 = attend, a large negative
    // value = masked): either [B or 1, 1, T, S] or already grouped by llama_group_mask (the model
    // groups it once per forward); undefined = attend to everything. When cache_k/cache_v are given,
    // the keys and values of this call are appended to them ([B, kv_heads, S, head_dim], after
    // RoPE) and attention runs over past + current keys.
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                          const torch::Tensor& mask, torch::Tensor* cache_k = nullptr,
                          torch::Tensor* cache_v = nullptr);

    LlamaConfig config;
    ParameterInit init;
    Projection q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
    // Scores through LibTorch's scaled_dot_product_attention (flash / memory-efficient kernels on
    // GPUs) where this build has it (fused_attention_available()) and the config allows it (no
    // soft-capping); the written-out path otherwise. The same function either way.
    bool fused = fused_attention_available();
};
TORCH_MODULE(LlamaAttention);

// Gated MLP: down(act(gate(x)) * up(x)); act = SiLU (SwiGLU) or tanh-approximated GELU (GeGLU).
class LlamaMLPImpl : public torch::nn::Cloneable<LlamaMLPImpl> {
public:
    explicit LlamaMLPImpl(const LlamaConfig& config, ParameterInit init = {}) : config(config), init(init) { reset(); }
    void reset() override;
    torch::Tensor forward(const torch::Tensor& x);

    LlamaConfig config;
    ParameterInit init;
    Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

// Pre-norm block: h = x + attn(norm1(x)); out = h + mlp(norm2(h)). Gemma 2's sandwich form
// normalises the sub-layer outputs too: h = x + post_attn_norm(attn(norm1(x)));
// out = h + post_ffn_norm(mlp(pre_ffn_norm(h))).
class LlamaDecoderLayerImpl : public torch::nn::Cloneable<LlamaDecoderLayerImpl> {
public:
    explicit LlamaDecoderLayerImpl(const LlamaConfig& config, ParameterInit init = {}) : config(config), init(init) {
        reset();
    }
    void reset() override;
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                          const torch::Tensor& mask, torch::Tensor* cache_k = nullptr,
                          torch::Tensor* cache_v = nullptr);
    // Every tensor requiring grad that forward reads besides x: the block's own parameters that
    // require grad (a base being trained, e.g. pretraining) and what the adapters of its 7
    // projections list (ProjectionAdapter::differentiable_tensors; throws ModelError for an
    // adapter that does not list them). What activation checkpointing passes to autograd.
    std::vector<torch::Tensor> differentiable_tensors() const;

    LlamaConfig config;
    ParameterInit init;
    LlamaAttention self_attn{nullptr};
    LlamaMLP mlp{nullptr};
    RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
    RMSNorm pre_feedforward_layernorm{nullptr}, post_feedforward_layernorm{nullptr};  // sandwich_norms only
};
TORCH_MODULE(LlamaDecoderLayer);

// ---------------------------------------------------------------- KV cache

// Keys and values of the tokens seen so far, per layer, for incremental decoding and for scoring
// several continuations of one shared prompt: run the prompt once, then
// cache.repeat_interleave(n_candidates) and run every candidate against the copy.
struct KvCache {
    std::vector<torch::Tensor> keys, values;  // per layer [B, kv_heads, S, head_dim], after RoPE
    torch::Tensor mask;                       // [B, S] int64, 1 = real token, 0 = padding

    bool empty() const { return !mask.defined(); }
    int64_t batch_size() const { return empty() ? 0 : mask.size(0); }
    int64_t length() const { return empty() ? 0 : mask.size(1); }  // S
    void clear();

    // Row b of the result is row rows[b] of this cache (rows: int64 [B'] on any device).
    KvCache index_select(const torch::Tensor& rows) const;
    // Each row repeated n times in place: rows 0,0,..,0,1,1,..,1,... (torch.repeat_interleave).
    KvCache repeat_interleave(int64_t n) const;
};

// ---------------------------------------------------------------- the model

// The decoder stack: embed_tokens, layers, norm. forward returns final hidden states.
class LlamaModelImpl : public torch::nn::Cloneable<LlamaModelImpl> {
public:
    explicit LlamaModelImpl(const LlamaConfig& config, ParameterInit init = {}) : config(config), init(init) {
        reset();
    }
    void reset() override;
    void reset_parameters();  // Hugging Face init: normal(0, initializer_range), norms = 1

    // input_ids [B, T] int64; attention_mask [B, T] (1 = real, 0 = padding; left or right padding)
    // or, with a non-empty cache, [B, past + T]; position_ids [B or 1, T] — when undefined they
    // are cumsum(mask) - 1 (counting the cached tokens), so padding never shifts positions.
    // With a cache, its keys/values/mask are extended by this call (if it throws, discard the
    // cache: some layers may already hold the new keys). Returns [B, T, hidden].
    torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                          const torch::Tensor& position_ids = {}, KvCache* cache = nullptr);

    // Layer i of `layers`, typed. (No typed copy of the list is kept: clone() replaces the
    // ModuleList's contents and would leave such a copy pointing at the wrong modules.)
    LlamaDecoderLayer layer(int64_t i) const;

    // Activation checkpointing (default off): when on, a forward that records a graph (grad mode
    // on, no KV cache, something in the block or its input requiring grad) keeps only each decoder
    // block's input and recomputes the block's activations in the backward (block_checkpoint.h):
    // less memory for one more forward per step; the same loss and gradients. Otherwise, and in
    // evaluation, the blocks run plainly. Copied by clone().
    void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
    bool activation_checkpointing() const { return activation_checkpointing_; }
    // Fused attention in every layer (LlamaAttentionImpl::fused); `on` is ignored where the build
    // lacks it. Default: on where available.
    void set_fused_attention(bool on);

    LlamaConfig config;
    ParameterInit init;
    TokenEmbedding embed_tokens{nullptr};
    torch::nn::ModuleList layers{nullptr};
    RMSNorm norm{nullptr};
    RotaryEmbedding rotary_emb{nullptr};        // buffers only; no parameters

private:
    bool activation_checkpointing_ = false;
};
TORCH_MODULE(LlamaModel);

// The causal language model: `model` plus `lm_head` (tied to model.embed_tokens when
// config.tie_word_embeddings, in which case no lm_head module or parameter exists).
class LlamaForCausalLMImpl : public torch::nn::Cloneable<LlamaForCausalLMImpl> {
public:
    explicit LlamaForCausalLMImpl(const LlamaConfig& config, ParameterInit init = {});
    void reset() override;
    void reset_parameters();

    // Logits [B, T, vocab] float32. Arguments as LlamaModelImpl::forward.
    torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                          const torch::Tensor& position_ids = {});
    // The same, appending to `cache` (which may be empty) and attending to past + current tokens.
    torch::Tensor forward_with_cache(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                     const torch::Tensor& position_ids, KvCache* cache);
    // The final-norm hidden states [B, T, hidden] that forward() applies the LM head to (arguments
    // as forward). With logits() on selected rows, a loss that reads a few positions (the response)
    // does not pay for the [B, T, vocab] head and log-softmax everywhere: forward(ids, mask) equals
    // logits(forward_hidden(ids, mask)).
    torch::Tensor forward_hidden(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                                 const torch::Tensor& position_ids = {});
    // hidden [..., hidden] -> float32 logits [..., vocab], soft-capped when the config says so
    // (for callers that need logits at a few positions,
    // e.g. rows [N, hidden] gathered from forward_hidden).
    torch::Tensor logits(const torch::Tensor& hidden);
    // The output embedding matrix [vocab, hidden] (model.embed_tokens.weight when tied).
    torch::Tensor output_weight() const;

    // The 7 adaptable projections of every layer, in layer order and q,k,v,o,gate,up,down order,
    // named like their parameters without ".weight" ("model.layers.3.self_attn.q_proj").
    std::vector<std::pair<std::string, Projection>> projections() const;
    // One projection; `module` is one of llama_projection_names() ("q_proj", ...).
    Projection projection(int64_t layer, const std::string& module) const;

    // LlamaModelImpl::set_activation_checkpointing of `model`.
    void set_activation_checkpointing(bool on) { model->set_activation_checkpointing(on); }
    bool activation_checkpointing() const { return model->activation_checkpointing(); }

    const LlamaConfig& config() const { return config_; }
    int64_t num_layers() const { return config_.num_hidden_layers; }
    torch::Dtype dtype() const { return init_.dtype; }  // storage and compute dtype of the base

    LlamaModel model{nullptr};
    Projection lm_head{nullptr};  // null when tied; never carries an adapter

private:
    LlamaConfig config_;
    ParameterInit init_;
};
TORCH_MODULE(LlamaForCausalLM);

// "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj".
const std::vector<std::string>& llama_projection_names();

// ---------------------------------------------------------------- Hugging Face directories

// Writes <dir>/model.safetensors (in the model's dtype, metadata format=pt) and <dir>/config.json
// (torch_dtype = that dtype), creating the directory. Each file is replaced atomically. Throws
// IoError.
void save_pretrained(const LlamaForCausalLM& model, const std::string& dir);

// "float32" | "bfloat16" | "float16" <-> LibTorch dtype; an unknown name is a ConfigError naming
// `what` (the option or key it came from).
torch::Dtype model_dtype_from_name(const std::string& name, const std::string& what);
std::string model_dtype_name(torch::Dtype dtype);

// Reads <dir>/config.json and <dir>/model.safetensors (or the shards listed in
// model.safetensors.index.json) into a new CPU model whose parameters are stored in `dtype`.
// Tensors are read straight into the parameters' storage (no random initialisation, no whole-file
// buffer; a tensor in another floating dtype goes through one temporary of its own size). Every
// expected tensor must be present with its exact shape and a floating dtype; a missing,
// misshapen, duplicated or unexpected tensor is a ModelError naming the tensor and the file.
// lm_head.weight may be absent when tied (and is ignored when present), rotary_emb.inv_freq
// buffers are ignored.
LlamaForCausalLM load_pretrained(const std::string& dir, torch::Dtype dtype = torch::kFloat32);

}  // namespace h2tune
