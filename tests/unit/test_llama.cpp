// The LLaMA-style decoder: config/presets, RoPE, attention with GQA, causality, padding, the KV
// cache, the adapter hook, Hugging Face parameter names and save/load of model directories.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "h2tune/core/error.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/llama_config.h"
#include "h2tune/model/safetensors.h"

namespace fs = std::filesystem;
using namespace h2tune;

namespace {

// Small enough to run in milliseconds, with GQA (4 query heads over 2 key/value heads).
LlamaConfig small_config(bool tied = true) {
    LlamaConfig c;
    c.vocab_size = 97;
    c.hidden_size = 64;
    c.intermediate_size = 96;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = tied;
    c.initializer_range = 0.1;  // larger than HF's 0.02 so attention patterns are not uniform
    return c;
}

LlamaForCausalLM small_model(bool tied = true, uint64_t seed = 7) {
    torch::manual_seed(seed);
    LlamaForCausalLM m(small_config(tied));
    m->eval();
    return m;
}

torch::Tensor random_ids(int64_t b, int64_t t, int64_t vocab = 97, uint64_t seed = 3) {
    torch::manual_seed(seed);
    return torch::randint(1, vocab, {b, t}, torch::kLong);
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

void expect_error_with(const std::function<void()>& f, const std::vector<std::string>& parts) {
    try {
        f();
        FAIL() << "expected an h2tune::Error";
    } catch (const Error& e) {
        const std::string msg = e.what();
        for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    }
}

class TempDir {
public:
    TempDir() {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        path_ = fs::temp_directory_path() / ("h2tune_llama_" + std::to_string(::getpid()) + "_" + info->name());
        fs::remove_all(path_);
        fs::create_directories(path_);
    }
    ~TempDir() { fs::remove_all(path_); }
    std::string str() const { return path_.string(); }

private:
    fs::path path_;
};

}  // namespace

// ---------------------------------------------------------------- config and presets

TEST(LlamaConfig, JsonRoundTripAndHuggingFaceFields) {
    LlamaConfig c = small_config(false);
    c.bos_token_id = 1;
    c.eos_token_id = 2;
    const nlohmann::json j = c.to_json();
    EXPECT_EQ(j["architectures"][0], "LlamaForCausalLM");
    EXPECT_EQ(j["model_type"], "llama");
    EXPECT_EQ(j["torch_dtype"], "float32");
    EXPECT_TRUE(j["pad_token_id"].is_null());
    const LlamaConfig d = LlamaConfig::from_json(j);
    EXPECT_EQ(d.to_json(), j);
    EXPECT_EQ(d.num_key_value_heads, 2);
    EXPECT_FALSE(d.tie_word_embeddings);
    EXPECT_EQ(d.pad_token_id, -1);
}

TEST(LlamaConfig, ReadsARealHuggingFaceConfig) {
    // SmolLM-135M's config.json (abridged), and Llama 3.2's eos list and rope_scaling.
    const auto j = nlohmann::json::parse(R"({
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 0,
      "eos_token_id": [0, 8], "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.02,
      "intermediate_size": 1536, "max_position_embeddings": 2048, "model_type": "llama",
      "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
      "pretraining_tp": 1, "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                       "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 10000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.40.0.dev0", "use_cache": true, "vocab_size": 49152})");
    const LlamaConfig c = LlamaConfig::from_json(j);
    EXPECT_EQ(c.hidden_size, 576);
    EXPECT_EQ(c.head_dim(), 64);
    EXPECT_EQ(c.eos_token_id, 0);
    EXPECT_EQ(c.rope_scaling.rope_type, "llama3");
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
}

TEST(LlamaConfig, ValidationNamesTheField) {
    auto expect_invalid = [](const std::function<void(LlamaConfig&)>& edit, const std::string& field) {
        LlamaConfig c = small_config();
        edit(c);
        try {
            c.validate();
            FAIL() << "expected ConfigError for " << field;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
        }
    };
    expect_invalid([](LlamaConfig& c) { c.hidden_size = 66; }, "divisible by num_attention_heads");
    expect_invalid([](LlamaConfig& c) { c.num_key_value_heads = 3; }, "divisible by num_key_value_heads");
    expect_invalid([](LlamaConfig& c) { c.hidden_size = 36; c.num_attention_heads = 4; }, "even");
    expect_invalid([](LlamaConfig& c) { c.vocab_size = 0; }, "vocab_size");
    expect_invalid([](LlamaConfig& c) { c.num_hidden_layers = -1; }, "num_hidden_layers");
    expect_invalid([](LlamaConfig& c) { c.rms_norm_eps = 0; }, "rms_norm_eps");
    expect_invalid([](LlamaConfig& c) { c.eos_token_id = 97; }, "eos_token_id");

    nlohmann::json j = small_config().to_json();
    j["hidden_size"] = "wide";
    expect_error_with([&] { LlamaConfig::from_json(j); }, {"hidden_size"});
}

// Regression: "hidden_size": 1e30 was converted to int64 as -9223372036854775808 and reported as
// that; every integer key is now read exactly and bounded before anything is allocated.
TEST(LlamaConfig, IntegerKeysAreReadExactlyAndBounded) {
    const auto parse_with = [](const std::function<void(nlohmann::json&)>& edit) {
        nlohmann::json j = small_config().to_json();
        edit(j);
        return llama_config_parse(j.dump(), "model/config.json");
    };
    const auto refused = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& message) {
        try {
            parse_with(edit);
            FAIL() << "expected ModelError with: " << message;
        } catch (const ModelError& e) {
            EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
        }
    };
    refused([](nlohmann::json& j) { j["hidden_size"] = 1e30; },
            "model/config.json: llama config: hidden_size: expected a positive integer, got 1e+30");
    refused([](nlohmann::json& j) { j["hidden_size"] = 0.5; }, "hidden_size: expected a positive integer, got 0.5");
    refused([](nlohmann::json& j) { j["hidden_size"] = -64; }, "hidden_size: expected a positive integer, got -64");
    refused([](nlohmann::json& j) { j["vocab_size"] = 18446744073709551615ull; },
            "vocab_size: expected a positive integer, got 18446744073709551615");
    refused([](nlohmann::json& j) { j["num_hidden_layers"] = true; },
            "num_hidden_layers: expected a positive integer, got true");
    refused([](nlohmann::json& j) { j["hidden_size"] = 1e9; },
            "hidden_size (1000000000) is above the sanity bound 16777216 (2^24");
    refused([](nlohmann::json& j) { j["vocab_size"] = 1e9; }, "vocab_size (1000000000) is above the sanity bound");
    refused([](nlohmann::json& j) { j["intermediate_size"] = int64_t{1} << 40; }, "intermediate_size");
    refused([](nlohmann::json& j) { j["num_hidden_layers"] = (1 << 20) + 1; },
            "num_hidden_layers (1048577) is above the sanity bound 1048576 (2^20");
    refused([](nlohmann::json& j) { j["num_key_value_heads"] = 2.5; }, "num_key_value_heads: expected a positive integer");
    refused([](nlohmann::json& j) { j["max_position_embeddings"] = 1e300; }, "max_position_embeddings");
    refused([](nlohmann::json& j) { j["head_dim"] = 1e20; }, "head_dim: expected a positive integer, got 1e+20");
    refused([](nlohmann::json& j) { j["eos_token_id"] = 18446744073709551615ull; }, "eos_token_id");
    refused([](nlohmann::json& j) { j["bos_token_id"] = {1e30}; }, "bos_token_id");
    // A float sliding window was cast to int64 unchecked (undefined behaviour for 1e30).
    refused([](nlohmann::json& j) { j["model_type"] = "mistral"; j["sliding_window"] = 1e30; },
            "sliding_window: expected a positive integer, got 1e+30");
    refused([](nlohmann::json& j) {
        j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", -1}};
    }, "rope_scaling.original_max_position_embeddings: expected a positive integer, got -1");

    // Integral floats are the integers they spell, as in transformers.
    const LlamaConfig c = parse_with([](nlohmann::json& j) { j["hidden_size"] = 64.0; j["vocab_size"] = 97.0; });
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.vocab_size, 97);
    // The bounds hold for configs built in code too, and the parameter count cannot overflow.
    LlamaConfig huge = small_config();
    huge.vocab_size = (int64_t{1} << 24) + 1;
    expect_error_with([&] { huge.validate(); }, {"vocab_size", "sanity bound"});
    huge = small_config();
    huge.hidden_size = huge.intermediate_size = int64_t{1} << 24;
    huge.num_hidden_layers = huge.num_attention_heads = huge.num_key_value_heads = int64_t{1} << 20;
    huge.head_dim_size = 1 << 4;
    huge.validate();
    expect_error_with([&] { llama_parameter_count(huge); }, {"parameter count", "2^63"});
}

TEST(LlamaConfig, DeeplyNestedJsonIsRefusedBeforeParsing) {
    std::string text = small_config().to_json().dump();
    text.insert(1, "\"x\": " + std::string(100000, '[') + std::string(100000, ']') + ", ");
    expect_error_with([&] { llama_config_parse(text, "deep/config.json"); },
                      {"deep/config.json: JSON nested deeper than 32 levels"});
}

TEST(LlamaConfig, LoadReadsOnlyARegularFile) {
    expect_error_with([] { llama_config_load("/dev/zero"); },
                      {"/dev/zero: not a regular file (a FIFO, socket or device); give the config.json itself"});
    TempDir dir;
    expect_error_with([&] { llama_config_load(dir.str()); }, {"is a directory, not a config.json"});
    const std::string big = dir.str() + "/config.json";
    std::ofstream(big) << std::string((4 << 20) + 1, ' ');
    expect_error_with([&] { llama_config_load(big); }, {"config.json", "may have at most 4 MiB"});
}

// What the decoder does not compute is refused by name, never run as a different model.
TEST(LlamaConfig, UnsupportedValuesNameTheKeyAndValue) {
    auto refused = [](const std::function<void(nlohmann::json&)>& edit, std::initializer_list<std::string> parts) {
        nlohmann::json j = small_config().to_json();
        edit(j);
        expect_error_with([&] { LlamaConfig::from_json(j); }, parts);
    };
    refused([](nlohmann::json& j) { j["model_type"] = "gpt2"; }, {"model_type", "'gpt2'", "llama, qwen2"});
    refused([](nlohmann::json& j) { j["hidden_act"] = "relu"; }, {"hidden_act", "'relu'"});
    refused([](nlohmann::json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; },
            {"rope_scaling.rope_type", "'yarn'"});
    refused([](nlohmann::json& j) { j["model_type"] = "qwen2"; j["use_sliding_window"] = true; },
            {"use_sliding_window"});
    refused([](nlohmann::json& j) { j["model_type"] = "gemma"; j["hidden_activation"] = "relu"; },
            {"hidden_activation", "'relu'"});
    refused([](nlohmann::json& j) { j["model_type"] = "gemma2"; j["attn_logit_softcapping"] = -1.0; },
            {"attn_logit_softcapping"});
    refused([](nlohmann::json& j) { j["head_dim"] = 15; }, {"head_dim", "even"});
}

// Each family's config.json sets its traits (and transformers' defaults for what is missing).
TEST(LlamaConfig, FamilyTraitsComeFromModelType) {
    auto read = [](nlohmann::json j) {
        j["vocab_size"] = 1000;
        j["hidden_size"] = 64;
        j["intermediate_size"] = 128;
        j["num_hidden_layers"] = 2;
        j["num_attention_heads"] = 4;
        return LlamaConfig::from_json(j);
    };
    const LlamaConfig llama = read({{"model_type", "llama"}, {"attention_bias", true}, {"mlp_bias", true}});
    EXPECT_TRUE(llama.attention_bias && llama.mlp_bias && llama.q_proj_has_bias());
    EXPECT_FALSE(llama.tie_word_embeddings);
    const LlamaConfig qwen = read({{"model_type", "qwen2"}, {"attention_bias", true}});
    EXPECT_TRUE(qwen.qkv_bias);
    EXPECT_FALSE(qwen.attention_bias);  // Qwen2 has no o_proj bias whatever the key says
    EXPECT_EQ(qwen.max_position_embeddings, 32768);
    const LlamaConfig mistral = read({{"model_type", "mistral"}});
    EXPECT_EQ(mistral.sliding_window, 4096);
    EXPECT_TRUE(mistral.layer_slides(1));
    const LlamaConfig gemma = read({{"model_type", "gemma"}, {"head_dim", 32}, {"hidden_act", "gelu"}});
    EXPECT_EQ(gemma.hidden_act, "gelu_pytorch_tanh");  // Gemma reads hidden_activation, not hidden_act
    EXPECT_TRUE(gemma.norm_unit_offset && gemma.scale_embeddings && gemma.tie_word_embeddings);
    EXPECT_EQ(gemma.head_dim(), 32);
    const LlamaConfig gemma2 = read({{"model_type", "gemma2"}, {"sliding_window", 16}, {"final_logit_softcapping", nullptr}});
    EXPECT_TRUE(gemma2.sandwich_norms);
    EXPECT_EQ(gemma2.final_logit_softcapping, 0.0);
    EXPECT_EQ(gemma2.attn_logit_softcapping, 50.0);
    EXPECT_TRUE(gemma2.layer_slides(0));
    EXPECT_FALSE(gemma2.layer_slides(1));
    for (const LlamaConfig& c : {llama, qwen, mistral, gemma, gemma2})
        EXPECT_EQ(LlamaConfig::from_json(c.to_json()).to_json().dump(), c.to_json().dump()) << c.model_type;
}

TEST(LlamaConfig, PresetsFormAFamily) {
    const auto names = llama_preset_names();
    ASSERT_GE(names.size(), 3u);
    std::set<int64_t> widths, depths, heads, ffns;
    int64_t prev_params = 0;
    for (const auto& n : names) {
        const LlamaConfig c = llama_preset(n, 4096);
        EXPECT_EQ(c.vocab_size, 4096);
        EXPECT_GE(c.head_dim(), 32) << n;
        widths.insert(c.hidden_size);
        depths.insert(c.num_hidden_layers);
        heads.insert(c.num_attention_heads);
        ffns.insert(c.intermediate_size);
        const int64_t params = llama_parameter_count(c);
        EXPECT_GT(params, prev_params) << n;
        prev_params = params;
    }
    EXPECT_EQ(widths.size(), names.size());
    EXPECT_EQ(depths.size(), names.size());
    EXPECT_EQ(heads.size(), names.size());
    EXPECT_EQ(ffns.size(), names.size());
    expect_error_with([] { llama_preset("h2-huge", 100); }, {"h2-huge", "h2-tiny", "h2-small", "h2-base"});
}

// The embedded default federates model families, so each preset is a different family with that
// family's traits, and its config.json reads back as the same model.
TEST(LlamaConfig, PresetsAreThreeFamilies) {
    const LlamaConfig tiny = llama_preset("h2-tiny", 4096);
    const LlamaConfig small = llama_preset("h2-small", 4096);
    const LlamaConfig base = llama_preset("h2-base", 4096);
    EXPECT_EQ(tiny.model_type, "llama");
    EXPECT_EQ(small.model_type, "qwen2");
    EXPECT_EQ(base.model_type, "gemma");
    EXPECT_FALSE(tiny.q_proj_has_bias());
    EXPECT_EQ(tiny.hidden_act, "silu");
    EXPECT_TRUE(small.qkv_bias);
    EXPECT_FALSE(small.attention_bias);
    EXPECT_DOUBLE_EQ(small.rope_theta, 1e6);
    EXPECT_TRUE(base.norm_unit_offset);
    EXPECT_TRUE(base.scale_embeddings);
    EXPECT_FALSE(base.sandwich_norms);
    EXPECT_EQ(base.hidden_act, "gelu_pytorch_tanh");
    EXPECT_EQ(base.head_dim(), 32);
    EXPECT_NE(base.head_dim() * base.num_attention_heads, base.hidden_size);  // the explicit head_dim matters
    for (const LlamaConfig& c : {tiny, small, base}) {
        EXPECT_FALSE(c.norm_unit_offset && c.model_type != "gemma") << c.model_type;
        const LlamaConfig back = LlamaConfig::from_json(c.to_json());
        EXPECT_EQ(back.to_json().dump(), c.to_json().dump()) << c.model_type;
        EXPECT_EQ(back.qkv_bias, c.qkv_bias);
        EXPECT_EQ(back.norm_unit_offset, c.norm_unit_offset);
        EXPECT_EQ(back.head_dim(), c.head_dim());
        EXPECT_EQ(back.hidden_act, c.hidden_act);
    }
}

TEST(LlamaConfig, ParameterCountMatchesTheModel) {
    for (bool tied : {true, false}) {
        const LlamaConfig c = small_config(tied);
        LlamaForCausalLM m(c);
        int64_t n = 0;
        for (const auto& p : m->parameters()) n += p.numel();
        EXPECT_EQ(n, llama_parameter_count(c)) << "tied=" << tied;
    }
    LlamaForCausalLM m(llama_preset("h2-tiny", 512));
    int64_t n = 0;
    for (const auto& p : m->parameters()) n += p.numel();
    EXPECT_EQ(n, llama_parameter_count(m->config()));
    // Family traits that add parameters: biases, explicit head_dim, Gemma 2's extra norms.
    for (const char* family : {"qwen2", "gemma2"}) {
        LlamaConfig c = small_config(false);
        c.model_type = family;
        c.qkv_bias = std::string(family) == "qwen2";
        c.attention_bias = c.mlp_bias = std::string(family) == "gemma2";
        c.sandwich_norms = std::string(family) == "gemma2";
        c.head_dim_size = 24;
        LlamaForCausalLM fm(c);
        int64_t fn = 0;
        for (const auto& p : fm->parameters()) fn += p.numel();
        EXPECT_EQ(fn, llama_parameter_count(c)) << family;
    }
}

// ---------------------------------------------------------------- rotary embeddings

TEST(Rope, ShapesAndHuggingFaceRotateHalfConvention) {
    LlamaConfig c = small_config();  // head_dim 16
    RotaryEmbedding rope(c);
    const torch::Tensor pos = torch::tensor({{0, 1, 5}, {2, 3, 4}}, torch::kLong);
    auto [cos, sin] = rope->forward(pos);
    EXPECT_EQ(cos.sizes(), (std::vector<int64_t>{2, 3, 16}));
    EXPECT_EQ(sin.sizes(), (std::vector<int64_t>{2, 3, 16}));

    // Pair (i, i + D/2) rotates by angle p * theta^(-2i/D): e_i -> cos * e_i + sin * e_{i+D/2}.
    const int64_t d = 16, p = 5, i = 3;
    torch::Tensor x = torch::zeros({1, 1, 1, d});
    x[0][0][0][i] = 1.0;
    auto [c5, s5] = rope->forward(torch::full({1, 1}, p, torch::kLong));
    const torch::Tensor y = apply_rotary(x, c5, s5);
    const double angle = p * std::pow(10000.0, -2.0 * i / d);
    EXPECT_NEAR(y[0][0][0][i].item<double>(), std::cos(angle), 1e-6);
    EXPECT_NEAR(y[0][0][0][i + d / 2].item<double>(), std::sin(angle), 1e-6);
    EXPECT_NEAR(y.abs().sum().item<double>(), std::abs(std::cos(angle)) + std::abs(std::sin(angle)), 1e-6);

    const torch::Tensor r = rotate_half(torch::arange(4, torch::kFloat32));
    EXPECT_TRUE(torch::equal(r, torch::tensor({-2.0f, -3.0f, 0.0f, 1.0f})));
}

TEST(Rope, PreservesNormAndDependsOnlyOnRelativePosition) {
    LlamaConfig c = small_config();
    RotaryEmbedding rope(c);
    torch::manual_seed(5);
    const torch::Tensor q = torch::randn({1, 1, 1, 16}), k = torch::randn({1, 1, 1, 16});
    auto rot = [&](const torch::Tensor& x, int64_t p) {
        auto [cs, sn] = rope->forward(torch::full({1, 1}, p, torch::kLong));
        return apply_rotary(x, cs, sn);
    };
    for (int64_t p : {0, 1, 17, 63}) EXPECT_NEAR(rot(q, p).norm().item<double>(), q.norm().item<double>(), 1e-5);
    const double d1 = (rot(q, 3) * rot(k, 1)).sum().item<double>();
    const double d2 = (rot(q, 40) * rot(k, 38)).sum().item<double>();
    const double d3 = (rot(q, 3) * rot(k, 0)).sum().item<double>();
    EXPECT_NEAR(d1, d2, 1e-4);
    EXPECT_GT(std::abs(d1 - d3), 1e-3);  // a different offset gives a different score
}

TEST(Rope, PositionsBeyondTheTableMatchTheTable) {
    // A long-context config computes positions past the precomputed rows on the fly; both paths
    // must give the same values.
    LlamaConfig c = small_config();
    c.max_position_embeddings = 10000;
    RotaryEmbedding rope(c);
    const torch::Tensor pos = torch::tensor({{8190, 8191}}, torch::kLong);
    auto [c1, s1] = rope->forward(pos, /*max_position=*/8191);     // table
    auto [c2, s2] = rope->forward(pos, /*max_position=*/1 << 20);  // forces on-the-fly
    EXPECT_LT(max_diff(c1, c2), 1e-6);
    EXPECT_LT(max_diff(s1, s2), 1e-6);
}

// ---------------------------------------------------------------- modules

TEST(Projection, WithoutAdapterIsBitIdenticalToLinear) {
    torch::manual_seed(1);
    Projection p(24, 40);
    const torch::Tensor x = torch::randn({3, 5, 24});
    EXPECT_TRUE(torch::equal(p->forward(x), torch::linear(x, p->weight)));
    EXPECT_EQ(p->named_parameters().size(), 1u);
    EXPECT_EQ(p->named_parameters().begin()->key(), "weight");
    EXPECT_NEAR(p->weight.std().item<double>(), 0.02, 0.003);
}

TEST(Projection, AdapterAddsItsDelta) {
    struct Scaled : ProjectionAdapter {
        torch::Tensor m;
        torch::Tensor delta(const torch::Tensor& x) override { return torch::matmul(x, m); }
    };
    torch::manual_seed(2);
    Projection p(8, 6);
    auto a = std::make_shared<Scaled>();
    a->m = torch::randn({8, 6});
    const torch::Tensor x = torch::randn({2, 8});
    const torch::Tensor base = p->forward(x);
    p->set_adapter(a);
    EXPECT_LT(max_diff(p->forward(x), base + torch::matmul(x, a->m)), 1e-6);
    a->m = torch::randn({8, 5});  // wrong output width
    expect_error_with([&] { p->forward(x); }, {"adapter delta", "[2, 5]", "[2, 6]"});
    p->set_adapter(nullptr);
    EXPECT_TRUE(torch::equal(p->forward(x), base));
}

TEST(Attention, ShapesWithGroupedQueryHeads) {
    LlamaConfig c = small_config();
    torch::manual_seed(3);
    LlamaAttention attn(c);
    EXPECT_EQ(attn->q_proj->weight.sizes(), (std::vector<int64_t>{64, 64}));
    EXPECT_EQ(attn->k_proj->weight.sizes(), (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(attn->v_proj->weight.sizes(), (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(attn->o_proj->weight.sizes(), (std::vector<int64_t>{64, 64}));
    RotaryEmbedding rope(c);
    auto [cs, sn] = rope->forward(torch::arange(7, torch::kLong).unsqueeze(0));
    const torch::Tensor x = torch::randn({3, 7, 64});
    EXPECT_EQ(attn->forward(x, cs, sn, {}).sizes(), (std::vector<int64_t>{3, 7, 64}));
    torch::Tensor k, v;
    attn->forward(x, cs, sn, {}, &k, &v);
    EXPECT_EQ(k.sizes(), (std::vector<int64_t>{3, 2, 7, 16}));
    EXPECT_EQ(v.sizes(), (std::vector<int64_t>{3, 2, 7, 16}));
}

TEST(Attention, GroupedComputationMatchesRepeatedKeyValueHeads) {
    // Reference: plain multi-head attention with K/V repeated per group (HF repeat_kv).
    LlamaConfig c = small_config();
    torch::manual_seed(4);
    LlamaAttention attn(c);
    RotaryEmbedding rope(c);
    const int64_t b = 2, t = 5, h = 4, kv = 2, d = 16;
    auto [cs, sn] = rope->forward(torch::arange(t, torch::kLong).unsqueeze(0));
    const torch::Tensor x = torch::randn({b, t, 64});
    const torch::Tensor q = apply_rotary(torch::linear(x, attn->q_proj->weight).view({b, t, h, d}), cs, sn).transpose(1, 2);
    torch::Tensor k = apply_rotary(torch::linear(x, attn->k_proj->weight).view({b, t, kv, d}), cs, sn).transpose(1, 2);
    torch::Tensor v = torch::linear(x, attn->v_proj->weight).view({b, t, kv, d}).transpose(1, 2);
    k = k.repeat_interleave(h / kv, 1);
    v = v.repeat_interleave(h / kv, 1);
    torch::Tensor scores = torch::matmul(q, k.transpose(2, 3)) / std::sqrt(double(d));
    scores = scores.masked_fill(torch::ones({t, t}, torch::kBool).triu(1), -1e30);
    const torch::Tensor ref = torch::linear(
        torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape({b, t, h * d}), attn->o_proj->weight);
    const torch::Tensor causal =
        torch::zeros({t, t}).masked_fill(torch::ones({t, t}, torch::kBool).triu(1), -1e30).view({1, 1, t, t});
    EXPECT_LT(max_diff(attn->forward(x, cs, sn, causal), ref), 1e-5);
}

// ---------------------------------------------------------------- the model

TEST(Llama, ParameterNamesAreHuggingFaces) {
    for (bool tied : {true, false}) {
        LlamaForCausalLM m = small_model(tied);
        std::vector<std::string> expected{"model.embed_tokens.weight"};
        for (int i = 0; i < 2; ++i) {
            const std::string p = "model.layers." + std::to_string(i) + ".";
            for (const char* s : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
                                  "post_attention_layernorm"})
                expected.push_back(p + s + ".weight");
        }
        expected.push_back("model.norm.weight");
        if (!tied) expected.push_back("lm_head.weight");
        std::vector<std::string> names;
        for (const auto& p : m->named_parameters()) names.push_back(p.key());
        EXPECT_EQ(names, expected) << "tied=" << tied;
    }
}

TEST(Llama, ProjectionsAreEnumeratedInOrder) {
    LlamaForCausalLM m = small_model();
    const auto projs = m->projections();
    ASSERT_EQ(projs.size(), 14u);
    EXPECT_EQ(projs[0].first, "model.layers.0.self_attn.q_proj");
    EXPECT_EQ(projs[6].first, "model.layers.0.mlp.down_proj");
    EXPECT_EQ(projs[10].first, "model.layers.1.self_attn.o_proj");
    const auto params = m->named_parameters();
    for (const auto& [name, p] : projs) {
        const torch::Tensor* w = params.find(name + ".weight");
        ASSERT_NE(w, nullptr) << name;
        EXPECT_TRUE(w->is_same(p->weight)) << name;
    }
    EXPECT_TRUE(m->projection(1, "up_proj")->weight.is_same(projs[12].second->weight));
    EXPECT_EQ(m->num_layers(), 2);
    EXPECT_EQ(m->config().hidden_size, 64);
    expect_error_with([&] { m->projection(0, "w_proj"); }, {"w_proj", "q_proj"});
    expect_error_with([&] { m->projection(2, "q_proj"); }, {"layer index 2"});
}

TEST(Llama, LogitShapesAndBackward) {
    LlamaForCausalLM m = small_model(false);
    m->train();
    const torch::Tensor ids = random_ids(3, 9);
    const torch::Tensor logits = m->forward(ids);
    EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 9, 97}));
    EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
    torch::nn::functional::cross_entropy(logits.reshape({-1, 97}), ids.reshape({-1})).backward();
    for (const auto& p : m->named_parameters()) {
        ASSERT_TRUE(p.value().grad().defined()) << p.key();
        EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    }
}

TEST(Llama, InitIsDeterministicAndHuggingFaceLike) {
    LlamaForCausalLM a = small_model(false, 11), b = small_model(false, 11), c = small_model(false, 12);
    const auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
    for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
    EXPECT_FALSE(torch::equal(pa["model.embed_tokens.weight"], pc["model.embed_tokens.weight"]));
    EXPECT_TRUE(torch::equal(pa["model.norm.weight"], torch::ones({64})));
    torch::manual_seed(1);
    LlamaForCausalLM d(llama_preset("h2-tiny", 1000));
    const auto pd = d->named_parameters();
    EXPECT_NEAR(pd["model.embed_tokens.weight"].std().item<double>(), 0.02, 0.001);
    EXPECT_NEAR(pd["model.layers.3.mlp.down_proj.weight"].std().item<double>(), 0.02, 0.001);
}

TEST(Llama, IsCausal) {
    LlamaForCausalLM m = small_model();
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = random_ids(2, 12);
    torch::Tensor changed = ids.clone();
    changed.slice(1, 7).fill_(5);
    const torch::Tensor a = m->forward(ids), b = m->forward(changed);
    EXPECT_TRUE(torch::equal(a.slice(1, 0, 7), b.slice(1, 0, 7)));
    EXPECT_GT(max_diff(a.slice(1, 7), b.slice(1, 7)), 1e-4);
}

TEST(Llama, PaddingLeftOrRightGivesTheUnpaddedLogits) {
    LlamaForCausalLM m = small_model();
    torch::NoGradGuard no_grad;
    const torch::Tensor seq = random_ids(1, 6);
    const torch::Tensor ref = m->forward(seq)[0];  // [6, V]
    const int64_t pad = 4;
    // Batch row 0 right-padded, row 1 left-padded, row 2 a different full-length sequence.
    torch::Tensor ids = torch::zeros({3, 6 + pad}, torch::kLong);
    torch::Tensor mask = torch::zeros({3, 6 + pad}, torch::kLong);
    ids[0].slice(0, 0, 6).copy_(seq[0]);
    mask[0].slice(0, 0, 6).fill_(1);
    ids[1].slice(0, pad).copy_(seq[0]);
    mask[1].slice(0, pad).fill_(1);
    ids[2].copy_(random_ids(1, 6 + pad, 97, 9)[0]);
    mask[2].fill_(1);
    const torch::Tensor out = m->forward(ids, mask);
    EXPECT_FALSE(torch::isnan(out).any().item<bool>());
    EXPECT_LT(max_diff(out[0].slice(0, 0, 6), ref), 1e-5);
    EXPECT_LT(max_diff(out[1].slice(0, pad), ref), 1e-5);
    // Explicit position ids give the same result as the derived ones.
    const torch::Tensor pos = (mask.cumsum(1) - 1).clamp_min(0);
    EXPECT_LT(max_diff(m->forward(ids, mask, pos), out), 1e-6);
}

// LibTorch >= 2.1 builds compute attention with scaled_dot_product_attention by default; it must
// give the written-out path's log-probabilities (float32, 1e-5) with grouped heads, left and right
// padding, a sliding window and the KV cache. On LibTorch 1.13 there is only the written-out path.
TEST(Llama, FusedAttentionMatchesTheWrittenOutPath) {
    if (!fused_attention_available()) GTEST_SKIP() << "this LibTorch has no scaled_dot_product_attention with a scale";
    for (const bool window : {false, true}) {
        LlamaConfig c = small_config();
        if (window) c.sliding_window = 3;
        torch::manual_seed(11);
        LlamaForCausalLM m(c);
        m->eval();
        torch::NoGradGuard no_grad;
        torch::Tensor ids = random_ids(3, 9);
        torch::Tensor mask = torch::ones({3, 9}, torch::kLong);
        mask[0].slice(0, 6).fill_(0);  // right padding
        mask[1].slice(0, 0, 4).fill_(0);  // left padding
        auto log_probs = [&](bool fused) {
            m->model->set_fused_attention(fused);
            return torch::log_softmax(m->forward(ids, mask), -1);
        };
        const torch::Tensor eager = log_probs(false), fused = log_probs(true);
        EXPECT_FALSE(torch::isnan(fused).any().item<bool>());
        EXPECT_LT(max_diff(eager, fused), 1e-5) << "sliding window " << window;
        EXPECT_TRUE(m->model->layer(1)->self_attn->fused);

        KvCache cache;
        m->model->set_fused_attention(true);
        const torch::Tensor first = m->forward_with_cache(ids.slice(1, 0, 5), mask.slice(1, 0, 5), {}, &cache);
        const torch::Tensor rest = m->forward_with_cache(ids.slice(1, 5), mask, {}, &cache);
        // Compared at real tokens (a padding position's output is whatever it attended to).
        const torch::Tensor real = mask.to(torch::kBool).unsqueeze(-1);
        const torch::Tensor cached = torch::log_softmax(torch::cat({first, rest}, 1), -1);
        EXPECT_LT(max_diff(cached.masked_fill(~real, 0), eager.masked_fill(~real, 0)), 1e-5);
    }
}

TEST(Llama, KvCacheMatchesFullForward) {
    LlamaForCausalLM m = small_model(false);
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = random_ids(2, 11);
    const torch::Tensor full = m->forward(ids);

    KvCache cache;
    const torch::Tensor a = m->forward_with_cache(ids.slice(1, 0, 7), {}, {}, &cache);
    EXPECT_EQ(cache.length(), 7);
    EXPECT_EQ(cache.keys.size(), 2u);
    EXPECT_EQ(cache.keys[0].sizes(), (std::vector<int64_t>{2, 2, 7, 16}));
    const torch::Tensor b = m->forward_with_cache(ids.slice(1, 7, 9), {}, {}, &cache);
    torch::Tensor steps = b;
    for (int64_t i = 9; i < 11; ++i)  // one token at a time
        steps = torch::cat({steps, m->forward_with_cache(ids.slice(1, i, i + 1), {}, {}, &cache)}, 1);
    EXPECT_EQ(cache.length(), 11);
    EXPECT_LT(max_diff(torch::cat({a, steps}, 1), full), 1e-5);
}

TEST(Llama, KvCacheWithPaddedPromptsAndRepeatedContinuations) {
    LlamaForCausalLM m = small_model();
    torch::NoGradGuard no_grad;
    // Two prompts of different lengths: row 0 left-padded, row 1 full.
    const torch::Tensor p0 = random_ids(1, 3, 97, 21), p1 = random_ids(1, 5, 97, 22);
    torch::Tensor prompt = torch::zeros({2, 5}, torch::kLong), pmask = torch::zeros({2, 5}, torch::kLong);
    prompt[0].slice(0, 2).copy_(p0[0]);
    pmask[0].slice(0, 2).fill_(1);
    prompt[1].copy_(p1[0]);
    pmask[1].fill_(1);
    KvCache cache;
    const torch::Tensor plogits = m->forward_with_cache(prompt, pmask, {}, &cache);

    // Three candidate continuations per prompt, right-padded (lengths 1, 3, 2).
    const int64_t n = 3;
    const torch::Tensor cands = random_ids(n, 3, 97, 23);
    const std::vector<int64_t> lens{1, 3, 2};
    torch::Tensor cids = torch::zeros({2 * n, 3}, torch::kLong), cmask = torch::zeros({2 * n, 3}, torch::kLong);
    for (int64_t r = 0; r < 2 * n; ++r) {
        const int64_t j = r % n;
        cids[r].slice(0, 0, lens[j]).copy_(cands[j].slice(0, 0, lens[j]));
        cmask[r].slice(0, 0, lens[j]).fill_(1);
    }
    KvCache expanded = cache.repeat_interleave(n);
    EXPECT_EQ(expanded.batch_size(), 2 * n);
    EXPECT_EQ(cache.batch_size(), 2);  // the original is untouched and reusable
    // Mask given for the new tokens only here; the full [B, past + T] form is tested below.
    const torch::Tensor clogits = m->forward_with_cache(cids, cmask, {}, &expanded);
    EXPECT_EQ(expanded.length(), 8);

    for (int64_t r = 0; r < 2 * n; ++r) {
        const int64_t j = r % n;
        const torch::Tensor p = r < n ? p0 : p1;
        const torch::Tensor seq = torch::cat({p, cands[j].slice(0, 0, lens[j]).unsqueeze(0)}, 1);
        const torch::Tensor ref = m->forward(seq)[0];
        const int64_t plen = p.size(1);
        EXPECT_LT(max_diff(plogits[r / n].slice(0, 5 - plen), ref.slice(0, 0, plen)), 1e-5) << r;
        EXPECT_LT(max_diff(clogits[r].slice(0, 0, lens[j]), ref.slice(0, plen)), 1e-5) << r;
    }

    // The same with the full mask [B, past + T] and index_select.
    KvCache again = cache.index_select(torch::tensor({1, 0}, torch::kLong));
    const torch::Tensor next = torch::tensor({{7}, {9}}, torch::kLong);
    const torch::Tensor full_mask = torch::cat({again.mask, torch::ones({2, 1}, torch::kLong)}, 1);
    const torch::Tensor nl = m->forward_with_cache(next, full_mask, {}, &again);
    const torch::Tensor ref1 = m->forward(torch::cat({p1, torch::tensor({{7}}, torch::kLong)}, 1))[0][-1];
    const torch::Tensor ref0 = m->forward(torch::cat({p0, torch::tensor({{9}}, torch::kLong)}, 1))[0][-1];
    EXPECT_LT(max_diff(nl[0][0], ref1), 1e-5);
    EXPECT_LT(max_diff(nl[1][0], ref0), 1e-5);
}

TEST(Llama, RejectsBadInputs) {
    LlamaForCausalLM m = small_model();
    torch::NoGradGuard no_grad;
    expect_error_with([&] { m->forward(torch::tensor({{1, 200}}, torch::kLong)); }, {"token id 200", "97"});
    expect_error_with([&] { m->forward(random_ids(1, 65)); }, {"position 64", "max_position_embeddings"});
    expect_error_with([&] { m->forward(torch::ones({4}, torch::kLong)); }, {"input_ids"});
    expect_error_with([&] { m->forward(random_ids(2, 4), torch::ones({2, 5}, torch::kLong)); }, {"attention_mask"});
    KvCache cache;
    m->forward_with_cache(random_ids(2, 4), {}, {}, &cache);
    expect_error_with([&] { m->forward_with_cache(random_ids(3, 1), {}, {}, &cache); }, {"cache holds 2 rows"});
}

TEST(Llama, CloneIsIndependent) {
    LlamaForCausalLM m = small_model(false);
    torch::NoGradGuard no_grad;
    auto copy = std::dynamic_pointer_cast<LlamaForCausalLMImpl>(m->clone());
    ASSERT_NE(copy, nullptr);
    const torch::Tensor ids = random_ids(2, 6);
    EXPECT_TRUE(torch::equal(copy->forward(ids), m->forward(ids)));
    copy->projection(0, "q_proj")->weight.add_(1.0);
    EXPECT_FALSE(torch::equal(copy->forward(ids), m->forward(ids)));
}

// ---------------------------------------------------------------- save / load

TEST(Pretrained, RoundTripGivesIdenticalLogits) {
    for (bool tied : {true, false}) {
        TempDir dir;
        LlamaForCausalLM m = small_model(tied);
        save_pretrained(m, dir.str());
        EXPECT_TRUE(fs::exists(dir.str() + "/config.json"));
        const auto header = safetensors_read_header(dir.str() + "/model.safetensors");
        EXPECT_EQ(header.count("lm_head.weight"), tied ? 0u : 1u);
        LlamaForCausalLM back = load_pretrained(dir.str());
        back->eval();
        EXPECT_EQ(back->config().to_json(), m->config().to_json());
        torch::NoGradGuard no_grad;
        const torch::Tensor ids = random_ids(2, 8);
        EXPECT_TRUE(torch::equal(back->forward(ids), m->forward(ids))) << "tied=" << tied;
    }
}

TEST(Pretrained, LoadsHalfPrecisionAndIgnoresRotaryBuffers) {
    TempDir dir;
    LlamaForCausalLM m = small_model(false);
    save_pretrained(m, dir.str());
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : m->named_parameters()) tensors[p.key()] = p.value().detach().to(torch::kBFloat16);
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch::ones({8});
    safetensors_save(dir.str() + "/model.safetensors", tensors, {{"format", "pt"}});
    // Tensors that contradict config.json's torch_dtype are refused, naming both.
    expect_error_with([&] { load_pretrained(dir.str()); }, {"is BF16 but", "config.json says torch_dtype \"float32\""});
    LlamaConfig c = m->config();
    c.torch_dtype = "bfloat16";
    llama_config_save(c, dir.str() + "/config.json");
    LlamaForCausalLM back = load_pretrained(dir.str());
    const auto params = back->named_parameters();
    EXPECT_EQ(params["model.norm.weight"].scalar_type(), torch::kFloat32);
    EXPECT_TRUE(torch::equal(params["lm_head.weight"],
                             m->named_parameters()["lm_head.weight"].to(torch::kBFloat16).to(torch::kFloat32)));
}

TEST(Pretrained, LoadsShardedCheckpoints) {
    TempDir dir;
    LlamaForCausalLM m = small_model(false);
    save_pretrained(m, dir.str());
    fs::remove(dir.str() + "/model.safetensors");
    std::map<std::string, torch::Tensor> a, b;
    nlohmann::json index;
    for (const auto& p : m->named_parameters()) {
        const bool first = p.key().rfind("model.layers.1.", 0) != 0 && p.key() != "lm_head.weight";
        (first ? a : b)[p.key()] = p.value().detach();
        index["weight_map"][p.key()] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    safetensors_save(dir.str() + "/model-00001-of-00002.safetensors", a);
    safetensors_save(dir.str() + "/model-00002-of-00002.safetensors", b);
    std::ofstream(dir.str() + "/model.safetensors.index.json") << index.dump();
    LlamaForCausalLM back = load_pretrained(dir.str());
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = random_ids(1, 5);
    EXPECT_TRUE(torch::equal(back->forward(ids), m->forward(ids)));
}

TEST(Pretrained, RejectsMissingMisshapenAndUnexpectedTensors) {
    TempDir dir;
    LlamaForCausalLM m = small_model(false);
    save_pretrained(m, dir.str());
    const std::string file = dir.str() + "/model.safetensors";
    std::map<std::string, torch::Tensor> good;
    for (const auto& p : m->named_parameters()) good[p.key()] = p.value().detach();

    auto missing = good;
    missing.erase("model.layers.1.mlp.up_proj.weight");
    safetensors_save(file, missing);
    expect_error_with([&] { load_pretrained(dir.str()); },
                      {"model.safetensors", "missing tensor 'model.layers.1.mlp.up_proj.weight'", "[96, 64]"});

    auto lm_missing = good;
    lm_missing.erase("lm_head.weight");  // not tied here, so lm_head is required
    safetensors_save(file, lm_missing);
    expect_error_with([&] { load_pretrained(dir.str()); }, {"missing tensor 'lm_head.weight'"});

    auto wrong = good;
    wrong["model.layers.0.self_attn.k_proj.weight"] = torch::zeros({64, 64});
    safetensors_save(file, wrong);
    expect_error_with([&] { load_pretrained(dir.str()); },
                      {"model.safetensors", "'model.layers.0.self_attn.k_proj.weight'", "[64, 64]", "[32, 64]"});

    auto extra = good;
    extra["model.layers.2.mlp.up_proj.weight"] = torch::zeros({96, 64});
    safetensors_save(file, extra);
    expect_error_with([&] { load_pretrained(dir.str()); },
                      {"model.safetensors", "unexpected tensor 'model.layers.2.mlp.up_proj.weight'"});

    auto ints = good;
    ints["model.norm.weight"] = torch::ones({64}, torch::kInt32);
    safetensors_save(file, ints);
    expect_error_with([&] { load_pretrained(dir.str()); }, {"'model.norm.weight'", "I32"});

    fs::remove(file);
    expect_error_with([&] { load_pretrained(dir.str()); }, {"neither model.safetensors"});
    fs::remove(dir.str() + "/config.json");
    expect_error_with([&] { load_pretrained(dir.str()); }, {"no config.json"});
}

TEST(Pretrained, TiedCheckpointMayCarryLmHead) {
    TempDir dir;
    LlamaForCausalLM m = small_model(true);
    save_pretrained(m, dir.str());
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : m->named_parameters()) tensors[p.key()] = p.value().detach();
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone();
    safetensors_save(dir.str() + "/model.safetensors", tensors);
    EXPECT_NO_THROW(load_pretrained(dir.str()));
}
