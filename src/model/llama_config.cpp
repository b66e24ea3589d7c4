#include "h2tune/model/llama_config.h"

#include <cmath>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "model_file.h"

namespace h2tune {

namespace {

using json = nlohmann::json;

struct Preset {
    const char* name;
    const char* model_type;  // a row of the family table below: its fixed traits and activation
    int64_t hidden, layers, heads, kv_heads, head_dim, ffn;  // head_dim 0 = hidden / heads
    double rope_theta, rms_norm_eps;
};

// Smallest first, one family each, so that the embedded default federates clients that differ in
// family as well as in width, depth and heads (as the paper's Gemma / Llama / SmolLM clients do):
//   h2-tiny  Llama:  RMSNorm, SwiGLU, no biases;
//   h2-small Qwen2:  biases on q, k and v, rope_theta 1e6 and eps 1e-6 as Qwen2.5 ships;
//   h2-base  Gemma:  RMSNorm x (1 + w), embeddings scaled by sqrt(hidden), GeGLU (tanh GELU), and
//                    an explicit head_dim (8 x 32 = 256 query width on a 224-wide model).
// All have head_dim >= 32 (attention with head dim 16 dominated the step in our measurements and
// learned poorly). h2-tiny and h2-small have an FFN about 2.75x wide, as LLaMA's 8/3 rule rounded
// to 64; h2-base's is 2x: at 256 wide with an FFN of 704 (7.3 M parameters) its step cost 4.7x
// h2-tiny's, so pretraining it took half of the set-up's 30 minutes and its client set the
// default job's pace past 10 minutes; at 224 / 448 a token costs 1.6x less.
constexpr Preset kPresets[] = {
    {"h2-tiny", "llama", 128, 4, 4, 2, 0, 384, 10000.0, 1e-5},
    {"h2-small", "qwen2", 192, 6, 6, 2, 0, 512, 1000000.0, 1e-6},
    {"h2-base", "gemma", 224, 8, 8, 2, 32, 448, 10000.0, 1e-6},
};

[[noreturn]] void bad(const std::string& field, const std::string& why) {
    throw ConfigError("llama config: " + field + " " + why);
}

void require_positive(const std::string& field, int64_t v) {
    if (v <= 0) bad(field, "must be positive (got " + std::to_string(v) + ")");
}

// Sanity bounds on the sizes, far above every released model (Llama 3.1 405B: hidden 16384,
// intermediate 53248, 126 layers, 128 heads; Gemma 3: vocab 262144; Llama 4 Scout: 10M positions),
// so that a corrupt or hostile config.json is refused by name before a tensor is allocated.
constexpr int64_t kMaxWidth = int64_t{1} << 24;      // vocab_size, hidden_size, intermediate_size, head_dim
constexpr int64_t kMaxCount = int64_t{1} << 20;      // num_hidden_layers, attention and key/value heads
constexpr int64_t kMaxPositions = int64_t{1} << 30;  // max_position_embeddings, sliding windows

void require_at_most(const std::string& field, int64_t v, int64_t bound, const char* bound_text) {
    if (v > bound)
        bad(field, "(" + std::to_string(v) + ") is above the sanity bound " + std::to_string(bound) + " (" +
                       bound_text + ", far above any real model)");
}

// The value of an integer key, read exactly: an integral JSON number within int64 (4096.0 is 4096;
// 1e30, 0.5, "8" and true are refused rather than truncated, wrapped or converted).
bool exact_integer(const json& v, int64_t& out) {
    if (v.is_number_unsigned()) {
        const auto u = v.get<uint64_t>();
        if (u > static_cast<uint64_t>(INT64_MAX)) return false;
        out = static_cast<int64_t>(u);
        return true;
    }
    if (v.is_number_integer()) {
        out = v.get<int64_t>();
        return true;
    }
    if (v.is_number_float()) {
        const double d = v.get<double>();
        // [-2^63, 2^63): the doubles that convert to int64 without overflow.
        if (!std::isfinite(d) || d != std::floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return false;
        out = static_cast<int64_t>(d);
        return true;
    }
    return false;
}

// A size or count: a positive integer at most `bound`. "hidden_size: expected a positive integer,
// got 1e+30".
int64_t positive_integer(const json& v, const std::string& key, int64_t bound, const char* bound_text) {
    int64_t out = 0;
    if (!exact_integer(v, out) || out <= 0)
        throw ConfigError("llama config: " + key + ": expected a positive integer, got " + v.dump());
    require_at_most(key, out, bound, bound_text);
    return out;
}

int64_t get_positive(const json& j, const std::string& key, int64_t bound, const char* bound_text) {
    if (!j.contains(key)) bad(key, "is missing");
    return positive_integer(j.at(key), key, bound, bound_text);
}

int64_t get_positive_or(const json& j, const std::string& key, int64_t fallback, int64_t bound,
                        const char* bound_text) {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    return positive_integer(j.at(key), key, bound, bound_text);
}

// Reads j[key] as T, with a ConfigError naming the field when the type is wrong.
template <typename T>
T get_field(const json& j, const std::string& key) {
    try {
        return j.at(key).get<T>();
    } catch (const json::exception& e) {
        bad(key, std::string("has the wrong type or is missing: ") + e.what());
    }
}

template <typename T>
T get_or(const json& j, const std::string& key, T fallback) {
    if (!j.contains(key) || j.at(key).is_null()) return fallback;
    return get_field<T>(j, key);
}

// bos/eos/pad ids: null -> -1; Llama 3 lists several eos ids, we keep the first.
int64_t get_token_id(const json& j, const std::string& key) {
    if (!j.contains(key) || j.at(key).is_null()) return -1;
    const json& v = j.at(key);
    int64_t id = 0;
    if (v.is_array()) {
        if (v.empty()) return -1;
        if (!v.front().is_number_integer() || !exact_integer(v.front(), id))
            bad(key, "must hold integers (got " + v.front().dump() + ")");
        return id;
    }
    if (!v.is_number_integer() || !exact_integer(v, id))
        bad(key, "must be an integer, a list of integers or null (got " + v.dump() + ")");
    return id;
}

json token_id_json(int64_t id) { return id < 0 ? json(nullptr) : json(id); }

// ---------------------------------------------------------------- the family table
// One row per Hugging Face model_type: the architecture name transformers expects, the defaults
// its config class applies to missing keys, and the fixed traits of the family. Which optional
// keys a family reads is decided in read_family_keys below, keyed by the same rows.
struct Family {
    const char* model_type;
    const char* architecture;
    int64_t default_max_positions;
    bool default_tied;
    const char* activation_key;       // "hidden_act" or "hidden_activation"
    const char* default_activation;
    bool qkv_bias;                    // Qwen2: q, k, v always carry biases
    bool norm_unit_offset;            // Gemma, Gemma 2
    bool scale_embeddings;            // Gemma, Gemma 2
    bool sandwich_norms;              // Gemma 2
    bool reads_head_dim, reads_attention_bias, reads_mlp_bias;
};

constexpr Family kFamilies[] = {
    // model_type architecture          max_pos  tied   act key              default act        qkvb  1+w    emb    sand   hd     attb   mlpb
    {"llama",   "LlamaForCausalLM",   2048,    false, "hidden_act",        "silu",              false, false, false, false, true,  true,  true},
    {"qwen2",   "Qwen2ForCausalLM",   32768,   false, "hidden_act",        "silu",              true,  false, false, false, false, false, false},
    {"mistral", "MistralForCausalLM", 131072,  false, "hidden_act",        "silu",              false, false, false, false, true,  false, false},
    {"gemma",   "GemmaForCausalLM",   8192,    true,  "hidden_activation", "gelu_pytorch_tanh", false, true,  true,  false, true,  true,  false},
    {"gemma2",  "Gemma2ForCausalLM",  8192,    true,  "hidden_activation", "gelu_pytorch_tanh", false, true,  true,  true,  true,  true,  false},
};

const Family* find_family(const std::string& model_type) {
    for (const auto& f : kFamilies)
        if (model_type == f.model_type) return &f;
    return nullptr;
}

std::string family_list() {
    std::string out;
    for (const auto& f : kFamilies) out += (out.empty() ? "" : ", ") + std::string(f.model_type);
    return out;
}

const Family& family_of(const std::string& model_type) {
    const Family* f = find_family(model_type);
    if (f == nullptr) bad("model_type", "'" + model_type + "' is not supported (supported: " + family_list() + ")");
    return *f;
}

bool is_supported_activation(const std::string& act) {
    return act == "silu" || act == "gelu_pytorch_tanh" || act == "gelu";
}

// A float key that Hugging Face writes as null when the feature is off; 0 here means off.
double get_optional_positive(const json& j, const std::string& key, double fallback) {
    if (!j.contains(key)) return fallback;
    if (j.at(key).is_null()) return 0.0;
    const auto v = get_field<double>(j, key);
    if (!(v > 0.0)) bad(key, "must be positive or null (got " + std::to_string(v) + ")");
    return v;
}

void read_rope_scaling(const json& j, RopeScaling& out) {
    if (!j.contains("rope_scaling") || j.at("rope_scaling").is_null()) return;
    const json& rs = j.at("rope_scaling");
    if (!rs.is_object()) bad("rope_scaling", "must be an object or null");
    std::string type = get_or<std::string>(rs, "rope_type", "");
    if (type.empty()) type = get_or<std::string>(rs, "type", "");
    if (type == "default" || type.empty()) return;
    out.rope_type = type;
    out.factor = get_or<double>(rs, "factor", 1.0);
    out.low_freq_factor = get_or<double>(rs, "low_freq_factor", 1.0);
    out.high_freq_factor = get_or<double>(rs, "high_freq_factor", 4.0);
    if (rs.contains("original_max_position_embeddings") && !rs.at("original_max_position_embeddings").is_null())
        out.original_max_position_embeddings =
            positive_integer(rs.at("original_max_position_embeddings"), "rope_scaling.original_max_position_embeddings",
                             kMaxPositions, "2^30");
}

// The keys whose meaning depends on the family: biases, activation, head_dim, sliding windows,
// Gemma 2's scalars. Everything a family does not read keeps the family's fixed trait.
void read_family_keys(const json& j, const Family& f, LlamaConfig& c) {
    c.qkv_bias = f.qkv_bias;
    c.norm_unit_offset = f.norm_unit_offset;
    c.scale_embeddings = f.scale_embeddings;
    c.sandwich_norms = f.sandwich_norms;
    if (f.reads_attention_bias) c.attention_bias = get_or<bool>(j, "attention_bias", false);
    if (f.reads_mlp_bias) c.mlp_bias = get_or<bool>(j, "mlp_bias", false);
    if (f.reads_head_dim) c.head_dim_size = get_positive_or(j, "head_dim", 0, kMaxWidth, "2^24");
    // Gemma 1 ignores the legacy hidden_act and uses hidden_activation (null = gelu_pytorch_tanh).
    c.hidden_act = get_or<std::string>(j, f.activation_key, f.default_activation);
    if (!is_supported_activation(c.hidden_act))
        bad(f.activation_key, "'" + c.hidden_act + "' is not supported (silu, gelu_pytorch_tanh, gelu)");

    const std::string type = f.model_type;
    if (type == "qwen2" && get_or<bool>(j, "use_sliding_window", false))
        bad("use_sliding_window", "true is not supported for qwen2 (transformers applies it to all layers in "
                                  "eager attention but only above max_window_layers with flash attention)");
    // Mistral and Gemma 2: absent = 4096 (transformers' default), null = no window.
    const auto window = [&] {
        if (!j.contains("sliding_window")) return int64_t{4096};
        return get_positive_or(j, "sliding_window", 0, kMaxPositions, "2^30");
    };
    if (type == "mistral") c.sliding_window = window();
    if (type == "gemma2") {
        c.sliding_window = window();
        c.sliding_window_alternating = true;
        c.query_pre_attn_scalar = get_or<double>(j, "query_pre_attn_scalar", 224.0);
        if (!(c.query_pre_attn_scalar > 0.0)) bad("query_pre_attn_scalar", "must be positive");
        c.attn_logit_softcapping = get_optional_positive(j, "attn_logit_softcapping", 50.0);
        c.final_logit_softcapping = get_optional_positive(j, "final_logit_softcapping", 30.0);
    }
}

}  // namespace

std::vector<std::string> model_family_names() {
    std::vector<std::string> names;
    for (const auto& f : kFamilies) names.emplace_back(f.model_type);
    return names;
}

void LlamaConfig::validate() const {
    const Family& family = family_of(model_type);
    require_positive("vocab_size", vocab_size);
    require_positive("hidden_size", hidden_size);
    require_positive("intermediate_size", intermediate_size);
    require_positive("num_hidden_layers", num_hidden_layers);
    require_positive("num_attention_heads", num_attention_heads);
    require_positive("num_key_value_heads", num_key_value_heads);
    require_positive("max_position_embeddings", max_position_embeddings);
    require_at_most("vocab_size", vocab_size, kMaxWidth, "2^24");
    require_at_most("hidden_size", hidden_size, kMaxWidth, "2^24");
    require_at_most("intermediate_size", intermediate_size, kMaxWidth, "2^24");
    require_at_most("head_dim", head_dim_size, kMaxWidth, "2^24");
    require_at_most("num_hidden_layers", num_hidden_layers, kMaxCount, "2^20");
    require_at_most("num_attention_heads", num_attention_heads, kMaxCount, "2^20");
    require_at_most("num_key_value_heads", num_key_value_heads, kMaxCount, "2^20");
    require_at_most("max_position_embeddings", max_position_embeddings, kMaxPositions, "2^30");
    require_at_most("sliding_window", sliding_window, kMaxPositions, "2^30");
    require_at_most("rope_scaling.original_max_position_embeddings", rope_scaling.original_max_position_embeddings,
                    kMaxPositions, "2^30");
    if (head_dim_size < 0) bad("head_dim", "must be positive");
    if (head_dim_size == 0 && hidden_size % num_attention_heads != 0)
        bad("hidden_size", "(" + std::to_string(hidden_size) + ") must be divisible by num_attention_heads (" +
                               std::to_string(num_attention_heads) + ")");
    if (num_attention_heads % num_key_value_heads != 0)
        bad("num_attention_heads", "(" + std::to_string(num_attention_heads) +
                                       ") must be divisible by num_key_value_heads (" +
                                       std::to_string(num_key_value_heads) + ")");
    if (head_dim() % 2 != 0)
        bad(head_dim_size > 0 ? "head_dim" : "hidden_size",
            (head_dim_size > 0 ? "" : "/ num_attention_heads = head_dim ") + std::to_string(head_dim()) +
                " must be even (rotary embeddings rotate pairs)");
    if (!(rope_theta > 0.0)) bad("rope_theta", "must be positive");
    if (!(rms_norm_eps > 0.0)) bad("rms_norm_eps", "must be positive");
    if (!(initializer_range >= 0.0)) bad("initializer_range", "must be non-negative");
    if (!is_supported_activation(hidden_act))
        bad(family.activation_key, "'" + hidden_act + "' is not supported (silu, gelu_pytorch_tanh, gelu)");
    if (sliding_window < 0) bad("sliding_window", "must be positive or null");
    if (!(query_pre_attn_scalar >= 0.0)) bad("query_pre_attn_scalar", "must be positive");
    if (!(attn_logit_softcapping >= 0.0)) bad("attn_logit_softcapping", "must be positive or null");
    if (!(final_logit_softcapping >= 0.0)) bad("final_logit_softcapping", "must be positive or null");
    if (!torch_dtype.empty() && torch_dtype != "float32" && torch_dtype != "bfloat16" && torch_dtype != "float16")
        bad("torch_dtype", "'" + torch_dtype + "' is not supported (float32, bfloat16, float16)");
    const std::pair<const char*, int64_t> token_ids[] = {
        {"bos_token_id", bos_token_id}, {"eos_token_id", eos_token_id}, {"pad_token_id", pad_token_id}};
    for (const auto& [name, id] : token_ids) {
        if (id < -1 || id >= vocab_size)
            bad(name, "(" + std::to_string(id) + ") must be -1/null or below vocab_size (" +
                          std::to_string(vocab_size) + ")");
    }
    const auto& rs = rope_scaling;
    if (!rs.rope_type.empty()) {
        if (rs.rope_type != "linear" && rs.rope_type != "llama3")
            bad("rope_scaling.rope_type", "'" + rs.rope_type + "' is not supported (linear, llama3)");
        if (!(rs.factor > 0.0)) bad("rope_scaling.factor", "must be positive");
        if (rs.rope_type == "llama3") {
            require_positive("rope_scaling.original_max_position_embeddings",
                             rs.original_max_position_embeddings);
            if (!(rs.low_freq_factor > 0.0) || !(rs.high_freq_factor > rs.low_freq_factor))
                bad("rope_scaling", "needs 0 < low_freq_factor < high_freq_factor");
        }
    }
}

json LlamaConfig::to_json() const {
    const Family& f = family_of(model_type);
    const std::string type = model_type;
    json j;
    j["architectures"] = json::array({f.architecture});
    j["model_type"] = model_type;
    j["torch_dtype"] = torch_dtype.empty() ? std::string("float32") : torch_dtype;
    j[f.activation_key] = hidden_act;
    if (f.reads_attention_bias) j["attention_bias"] = attention_bias;
    if (f.reads_mlp_bias) j["mlp_bias"] = mlp_bias;
    j["attention_dropout"] = 0.0;
    j["vocab_size"] = vocab_size;
    j["hidden_size"] = hidden_size;
    j["intermediate_size"] = intermediate_size;
    j["num_hidden_layers"] = num_hidden_layers;
    j["num_attention_heads"] = num_attention_heads;
    j["num_key_value_heads"] = num_key_value_heads;
    if (f.reads_head_dim) j["head_dim"] = head_dim();
    j["max_position_embeddings"] = max_position_embeddings;
    j["rope_theta"] = rope_theta;
    j["rms_norm_eps"] = rms_norm_eps;
    j["initializer_range"] = initializer_range;
    j["tie_word_embeddings"] = tie_word_embeddings;
    j["bos_token_id"] = token_id_json(bos_token_id);
    j["eos_token_id"] = token_id_json(eos_token_id);
    j["pad_token_id"] = token_id_json(pad_token_id);
    auto optional = [](double v) { return v > 0.0 ? json(v) : json(nullptr); };
    if (type == "qwen2") j["use_sliding_window"] = false;
    if (type == "mistral" || type == "gemma2")
        j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
    if (type == "gemma2") {
        j["query_pre_attn_scalar"] = query_pre_attn_scalar;
        j["attn_logit_softcapping"] = optional(attn_logit_softcapping);
        j["final_logit_softcapping"] = optional(final_logit_softcapping);
    }
    if (rope_scaling.rope_type.empty()) {
        j["rope_scaling"] = nullptr;
    } else {
        json rs;
        rs["rope_type"] = rope_scaling.rope_type;
        rs["factor"] = rope_scaling.factor;
        if (rope_scaling.rope_type == "llama3") {
            rs["low_freq_factor"] = rope_scaling.low_freq_factor;
            rs["high_freq_factor"] = rope_scaling.high_freq_factor;
            rs["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
        }
        j["rope_scaling"] = rs;
    }
    j["use_cache"] = true;
    return j;
}

LlamaConfig LlamaConfig::from_json(const json& j) {
    if (!j.is_object()) throw ConfigError("llama config: expected a JSON object");
    LlamaConfig c;
    c.model_type = get_or<std::string>(j, "model_type", "llama");
    const Family& family = family_of(c.model_type);

    // Missing optional fields take the family's transformers defaults, as transformers would.
    // Every size is checked here, as read, so that 1e30 is named as such instead of wrapping.
    c.vocab_size = get_positive(j, "vocab_size", kMaxWidth, "2^24");
    c.hidden_size = get_positive(j, "hidden_size", kMaxWidth, "2^24");
    c.intermediate_size = get_positive(j, "intermediate_size", kMaxWidth, "2^24");
    c.num_hidden_layers = get_positive(j, "num_hidden_layers", kMaxCount, "2^20");
    c.num_attention_heads = get_positive(j, "num_attention_heads", kMaxCount, "2^20");
    c.num_key_value_heads = get_positive_or(j, "num_key_value_heads", c.num_attention_heads, kMaxCount, "2^20");
    c.max_position_embeddings =
        get_positive_or(j, "max_position_embeddings", family.default_max_positions, kMaxPositions, "2^30");
    c.rope_theta = get_or<double>(j, "rope_theta", 10000.0);
    c.rms_norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6);
    c.initializer_range = get_or<double>(j, "initializer_range", 0.02);
    c.tie_word_embeddings = get_or<bool>(j, "tie_word_embeddings", family.default_tied);
    c.torch_dtype = get_or<std::string>(j, "torch_dtype", "");
    c.bos_token_id = get_token_id(j, "bos_token_id");
    c.eos_token_id = get_token_id(j, "eos_token_id");
    c.pad_token_id = get_token_id(j, "pad_token_id");
    read_rope_scaling(j, c.rope_scaling);
    read_family_keys(j, family, c);
    // Only validated after the sizes are known, so the error names the real inconsistency.
    c.validate();
    return c;
}

LlamaConfig llama_config_parse(const std::string& text, const std::string& path) {
    if (json_nesting_depth(text) > model_file::kMaxJsonDepth)
        throw ModelError(path + ": JSON nested deeper than " + std::to_string(model_file::kMaxJsonDepth) +
                         " levels; not a config.json");
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        throw ModelError(path + ": not valid JSON: " + e.what());
    }
    try {
        return LlamaConfig::from_json(j);
    } catch (const ConfigError& e) {
        throw ModelError(path + ": " + e.what());
    }
}

LlamaConfig llama_config_load(const std::string& path) {
    // Real config.json files are a few KiB; the bound only stops a wrong path from being read.
    const InputFileRule rule{"config.json", 4ull << 20};
    return llama_config_parse(read_input_file(path, rule, InputErrorKind::kModel), path);
}

void llama_config_save(const LlamaConfig& config, const std::string& path) {
    config.validate();
    model_file::write_atomic(path, config.to_json().dump(2) + "\n");
}

std::vector<std::string> llama_preset_names() {
    std::vector<std::string> names;
    for (const auto& p : kPresets) names.emplace_back(p.name);
    return names;
}

LlamaConfig llama_preset(const std::string& name, int64_t vocab_size) {
    for (const auto& p : kPresets) {
        if (name != p.name) continue;
        const Family& family = family_of(p.model_type);
        LlamaConfig c;
        c.model_type = family.model_type;
        c.qkv_bias = family.qkv_bias;
        c.norm_unit_offset = family.norm_unit_offset;
        c.scale_embeddings = family.scale_embeddings;
        c.sandwich_norms = family.sandwich_norms;
        c.hidden_act = family.default_activation;
        c.vocab_size = vocab_size;
        c.hidden_size = p.hidden;
        c.num_hidden_layers = p.layers;
        c.num_attention_heads = p.heads;
        c.num_key_value_heads = p.kv_heads;
        c.head_dim_size = p.head_dim;
        c.intermediate_size = p.ffn;
        c.max_position_embeddings = 1024;
        c.rope_theta = p.rope_theta;
        c.rms_norm_eps = p.rms_norm_eps;
        c.tie_word_embeddings = true;  // the embedding is a large share of these small models
        c.validate();
        return c;
    }
    std::string valid;
    for (const auto& n : llama_preset_names()) valid += (valid.empty() ? "" : ", ") + n;
    throw ConfigError("unknown model preset '" + name + "' (valid: " + valid + ")");
}

int64_t llama_parameter_count(const LlamaConfig& c) {
    // Each size is bounded but their products are not: a config at the bounds would hold more
    // than 2^63 parameters, so the count is computed with overflow checks.
    bool overflow = false;
    const auto mul = [&](int64_t a, int64_t b) {
        int64_t r = 0;
        overflow |= __builtin_mul_overflow(a, b, &r);
        return r;
    };
    const auto add = [&](int64_t a, int64_t b) {
        int64_t r = 0;
        overflow |= __builtin_add_overflow(a, b, &r);
        return r;
    };
    const int64_t h = c.hidden_size, q = mul(c.num_attention_heads, c.head_dim()),
                  kv = mul(c.num_key_value_heads, c.head_dim());
    int64_t attn = add(mul(2 * h, q), mul(2 * h, kv));
    if (c.q_proj_has_bias()) attn = add(attn, add(q, mul(2, kv)));
    if (c.attention_bias) attn = add(attn, h);
    int64_t mlp = mul(3 * h, c.intermediate_size);
    if (c.mlp_bias) mlp = add(mlp, add(mul(2, c.intermediate_size), h));
    const int64_t layer = add(add(attn, mlp), mul(c.sandwich_norms ? 4 : 2, h));
    int64_t total = add(add(mul(c.vocab_size, h), mul(c.num_hidden_layers, layer)), h);
    if (!c.tie_word_embeddings) total = add(total, mul(c.vocab_size, h));
    if (overflow) bad("parameter count", "exceeds 2^63: the sizes are far beyond any model this can hold");
    return total;
}

}  // namespace h2tune
