// Hyper-parameters of the decoder, with Hugging Face's field names, for every supported model
// family: Llama (Llama 2/3.x, SmolLM), Qwen2 (Qwen2, Qwen2.5), Mistral, Gemma and Gemma 2. They
// are one LLaMA-style decoder that differs in a few traits (biases, norm form, activation,
// embedding scale, soft-capping, sliding windows), so one struct describes them all; a config.json
// written here loads in `transformers` and a real checkpoint's config.json loads here. Also the
// built-in presets (h2-tiny, h2-small, h2-base) sized for a 2-core CPU. No LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace h2tune {

// Optional RoPE frequency scaling as in Hugging Face `rope_scaling` (Llama 3.1+ checkpoints use
// "llama3"). rope_type "" = none.
struct RopeScaling {
    std::string rope_type;                  // "", "linear" or "llama3"
    double factor = 1.0;
    double low_freq_factor = 1.0;           // llama3 only
    double high_freq_factor = 4.0;          // llama3 only
    int64_t original_max_position_embeddings = 0;  // llama3 only
};

struct LlamaConfig {
    // Hugging Face `model_type`: one of model_family_names(). It fixes which config.json keys are
    // read and the family's defaults; the traits below are what the decoder computes with.
    std::string model_type = "llama";
    int64_t vocab_size = 4096;
    int64_t hidden_size = 128;
    int64_t intermediate_size = 384;
    int64_t num_hidden_layers = 4;
    int64_t num_attention_heads = 4;
    int64_t num_key_value_heads = 2;
    int64_t max_position_embeddings = 512;
    double rope_theta = 10000.0;
    double rms_norm_eps = 1e-5;
    double initializer_range = 0.02;
    bool tie_word_embeddings = true;
    int64_t bos_token_id = -1;              // -1: none (JSON null)
    int64_t eos_token_id = -1;              // first entry when config.json holds a list
    int64_t pad_token_id = -1;
    RopeScaling rope_scaling;
    std::string torch_dtype = "float32";    // the checkpoint's dtype as config.json states it ("" = not stated)

    // ---- family traits (set from model_type and config.json; defaults = Llama)
    int64_t head_dim_size = 0;              // explicit head_dim; 0 = hidden_size / num_attention_heads
    bool attention_bias = false;            // biases on q, k, v and o (Llama, Gemma option)
    bool qkv_bias = false;                  // biases on q, k and v only (Qwen2)
    bool mlp_bias = false;                  // biases on gate, up and down (Llama option)
    std::string hidden_act = "silu";        // silu | gelu_pytorch_tanh | gelu
    bool norm_unit_offset = false;          // Gemma RMSNorm: x_hat * (1 + weight), in float32
    bool scale_embeddings = false;          // Gemma: embeddings * sqrt(hidden_size), in the compute dtype
    bool sandwich_norms = false;            // Gemma 2: post-attention and pre/post-feed-forward norms
    double query_pre_attn_scalar = 0.0;     // Gemma 2: scores scaled by this^-1/2; 0 = head_dim
    double attn_logit_softcapping = 0.0;    // Gemma 2: scores = c tanh(scores / c); 0 = none
    double final_logit_softcapping = 0.0;   // Gemma 2: logits = c tanh(logits / c); 0 = none
    int64_t sliding_window = 0;             // keys within this many positions (self included); 0 = none
    bool sliding_window_alternating = false;  // Gemma 2: only even layers slide, odd ones see everything

    int64_t head_dim() const { return head_dim_size > 0 ? head_dim_size : hidden_size / num_attention_heads; }
    // Whether layer `layer` attends through the sliding window.
    bool layer_slides(int64_t layer) const {
        return sliding_window > 0 && (!sliding_window_alternating || layer % 2 == 0);
    }
    bool q_proj_has_bias() const { return attention_bias || qkv_bias; }

    // Throws ConfigError naming the first offending field (sizes positive, hidden_size divisible
    // by num_attention_heads, heads divisible by num_key_value_heads, head_dim even, ...).
    void validate() const;

    // config.json document in the family's own keys ("architectures": ["Gemma2ForCausalLM"],
    // "model_type": "gemma2", "torch_dtype", "hidden_activation", ...), loadable by transformers.
    nlohmann::json to_json() const;
    // Reads a Hugging Face config.json object: `model_type` selects the family (absent = llama),
    // missing keys take that family's transformers defaults, unknown keys are ignored, and a
    // value this implementation does not compute (another activation, rope type, a Qwen2 sliding
    // window, ...) is a ConfigError naming the key and the value. The result is validated.
    static LlamaConfig from_json(const nlohmann::json& j);
};

// config.json I/O. Load throws ModelError naming the file; save is atomic and throws IoError.
// Every integer key must be an integral number (4096.0 passes, 1e30 and 0.5 do not) and the sizes
// stay below sanity bounds far above any real model: vocab_size, hidden_size, intermediate_size and
// head_dim at most 2^24, layers and heads at most 2^20, positions and windows at most 2^30.
// The file must be a regular file of at most 4 MiB.
LlamaConfig llama_config_load(const std::string& path);
// Parses config.json text; `source` names it in errors ("<source>: llama config: ..."). Throws
// ModelError.
LlamaConfig llama_config_parse(const std::string& text, const std::string& source);
void llama_config_save(const LlamaConfig& config, const std::string& path);

// The supported Hugging Face model_type values, in the order of the family table.
std::vector<std::string> model_family_names();

// The built-in family, smallest first. Unknown names throw ConfigError listing the valid ones.
std::vector<std::string> llama_preset_names();
LlamaConfig llama_preset(const std::string& name, int64_t vocab_size);

// Number of parameters the model built from `config` holds (lm_head counted once when tied).
// Throws ConfigError when the count would overflow int64.
int64_t llama_parameter_count(const LlamaConfig& config);

}  // namespace h2tune
