// Hyper-parameters of a LLaMA-style decoder, with Hugging Face's field names so that a config.json
// written here loads in `transformers` and a real Llama/SmolLM config.json loads here. Also the
// built-in family of presets (h2-tiny, h2-small, h2-base) sized for a 2-core CPU. No LibTorch.
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

    int64_t head_dim() const { return hidden_size / num_attention_heads; }

    // Throws ConfigError naming the first offending field (sizes positive, hidden_size divisible
    // by num_attention_heads, heads divisible by num_key_value_heads, head_dim even, ...).
    void validate() const;

    // config.json document ("architectures": ["LlamaForCausalLM"], "model_type": "llama",
    // "torch_dtype": "float32", "hidden_act": "silu", ...).
    nlohmann::json to_json() const;
    // Reads a Hugging Face config.json object; unknown keys are ignored, features this
    // implementation lacks (biases, another activation, another head_dim) are rejected.
    // Throws ConfigError; the result is validated.
    static LlamaConfig from_json(const nlohmann::json& j);
};

// config.json I/O. Load throws ModelError naming the file; save is atomic and throws IoError.
LlamaConfig llama_config_load(const std::string& path);
void llama_config_save(const LlamaConfig& config, const std::string& path);

// The built-in family, smallest first. Unknown names throw ConfigError listing the valid ones.
std::vector<std::string> llama_preset_names();
LlamaConfig llama_preset(const std::string& name, int64_t vocab_size);

// Number of parameters the model built from `config` holds (lm_head counted once when tied).
int64_t llama_parameter_count(const LlamaConfig& config);

}  // namespace h2tune
