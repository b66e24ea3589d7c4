// Hugging Face model directories: config.json + model.safetensors (or sharded
// model-0000N-of-0000M.safetensors with model.safetensors.index.json).
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "h2tune/core/shape_text.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/safetensors.h"
#include "model_file.h"

namespace h2tune {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_float_dtype(torch::Dtype d) {
    return d == torch::kFloat32 || d == torch::kFloat16 || d == torch::kBFloat16 || d == torch::kFloat64;
}

// Product of dimensions, or -1 when it overflows (a config value no weights can match).
int64_t checked_product(std::initializer_list<int64_t> dims) {
    int64_t out = 1;
    for (const int64_t d : dims)
        if (__builtin_mul_overflow(out, d, &out)) return -1;
    return out;
}

// The tensors that carry each of config.json's size fields. Checking them against the headers
// before the model is built means a config that does not describe these weights (hidden_size
// 1e9 on a 128-wide checkpoint) is named for what it is instead of LibTorch trying to allocate
// terabytes; shapes not listed here are checked after the (then plausible) model is built.
void check_sizes_against_headers(const LlamaConfig& c, const std::map<std::string, SafetensorsEntry>& entries,
                                 std::map<std::string, std::string>& file_of, const std::string& config_path) {
    struct SizedTensor {
        std::string name;
        std::vector<int64_t> shape;
        const char* keys;
    };
    const int64_t q_rows = checked_product({c.num_attention_heads, c.head_dim()});
    const int64_t kv_rows = checked_product({c.num_key_value_heads, c.head_dim()});
    const std::vector<SizedTensor> sized = {
        {"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, "vocab_size, hidden_size"},
        {"model.layers.0.self_attn.q_proj.weight", {q_rows, c.hidden_size}, "num_attention_heads, head_dim, hidden_size"},
        {"model.layers.0.self_attn.k_proj.weight", {kv_rows, c.hidden_size}, "num_key_value_heads, head_dim, hidden_size"},
        {"model.layers.0.mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}, "intermediate_size, hidden_size"},
    };
    for (const auto& t : sized) {
        const auto it = entries.find(t.name);
        if (it == entries.end() || it->second.shape == t.shape) continue;
        throw ModelError(config_path + ": " + t.keys + " imply " + shape_string(t.shape) + " for tensor '" + t.name +
                         "' but " + file_of[t.name] + " holds " + shape_string(it->second.shape) +
                         "; config.json does not describe these weights");
    }
    // Layers present: the distinct N of "model.layers.N.".
    std::set<int64_t> layers;
    for (const auto& [name, e] : entries) {
        static const std::string kPrefix = "model.layers.";
        if (name.compare(0, kPrefix.size(), kPrefix) != 0) continue;
        try {
            layers.insert(std::stoll(name.substr(kPrefix.size())));
        } catch (const std::exception&) {
        }
    }
    // Only fewer layers than config.json says need stopping here (building them could exhaust the
    // node); an extra layer is named as an unexpected tensor once the model is built.
    if (!layers.empty() && static_cast<int64_t>(layers.size()) < c.num_hidden_layers)
        throw ModelError(config_path + ": num_hidden_layers is " + std::to_string(c.num_hidden_layers) +
                         " but the weights hold " + std::to_string(layers.size()) +
                         " layers; config.json does not describe these weights");
}

// Bytes the built model's parameters take in `dtype`, from the (already checked) headers.
double parameter_bytes(const std::map<std::string, SafetensorsEntry>& entries, torch::Dtype dtype) {
    double elements = 0;
    for (const auto& [name, e] : entries) {
        double n = 1;
        for (const int64_t d : e.shape) n *= static_cast<double>(d);
        elements += n;
    }
    return elements * static_cast<double>(torch::elementSize(dtype));
}

// Weights that are NaN or infinite make every loss NaN; training on them would report numbers
// that mean nothing, so they are refused where they enter.
void check_finite(const std::string& name, const torch::Tensor& tensor, const std::string& file) {
    const torch::Tensor finite = torch::isfinite(tensor);
    if (finite.all().item<bool>()) return;
    const int64_t bad = tensor.numel() - finite.sum().item<int64_t>();
    throw ModelError(file + ": tensor '" + name + "' holds " + std::to_string(bad) + " of " +
                     std::to_string(tensor.numel()) + " values that are NaN or infinite; the weights are corrupt");
}

// The weight files of a model directory and a description of them for error messages.
struct WeightFiles {
    std::vector<std::string> paths;
    std::string described;  // the single file, or the index file
    bool indexed = false;
    std::map<std::string, std::string> index_file_of;  // tensor -> shard path, from weight_map
};

WeightFiles find_weight_files(const std::string& dir) {
    const std::string single = dir + "/model.safetensors";
    const std::string index = dir + "/model.safetensors.index.json";
    if (model_file::exists(single)) return {{single}, single, false, {}};
    if (!model_file::exists(index))
        throw ModelError(dir + ": neither model.safetensors nor model.safetensors.index.json found");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(model_file::read_text(index));
    } catch (const nlohmann::json::exception& e) {
        throw ModelError(index + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw ModelError(index + ": no \"weight_map\" object");
    std::set<std::string> shards;
    WeightFiles out{{}, index, true, {}};
    for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string()) throw ModelError(index + ": weight_map entry '" + tensor + "' is not a file name");
        const std::string f = file.get<std::string>();
        if (f.empty() || f.find('/') != std::string::npos)
            throw ModelError(index + ": weight_map entry '" + tensor + "' names '" + f +
                             "', which is not a plain file name in the model directory");
        shards.insert(f);
        out.index_file_of[tensor] = dir + "/" + f;
    }
    if (shards.empty()) throw ModelError(index + ": weight_map is empty");
    for (const auto& f : shards) {
        const std::string path = dir + "/" + f;
        if (!model_file::exists(path))
            throw ModelError(index + ": weight_map names shard '" + f + "', which does not exist in " + dir);
        out.paths.push_back(path);
    }
    return out;
}

}  // namespace

torch::Dtype model_dtype_from_name(const std::string& name, const std::string& what) {
    if (name == "float32") return torch::kFloat32;
    if (name == "bfloat16") return torch::kBFloat16;
    if (name == "float16") return torch::kFloat16;
    throw ConfigError(what + ": '" + name + "' is not a model dtype (float32, bfloat16, float16)");
}

std::string model_dtype_name(torch::Dtype dtype) {
    if (dtype == torch::kFloat32) return "float32";
    if (dtype == torch::kBFloat16) return "bfloat16";
    if (dtype == torch::kFloat16) return "float16";
    throw ModelError(std::string("no model dtype name for ") + c10::toString(dtype));
}

void save_pretrained(const LlamaForCausalLM& model, const std::string& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw IoError(dir + ": cannot create directory: " + ec.message());
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : model->named_parameters(/*recurse=*/true))
        tensors.emplace(p.key(), p.value().detach().to(torch::kCPU));
    // transformers refuses safetensors files without format metadata.
    safetensors_save(dir + "/model.safetensors", tensors, {{"format", "pt"}});
    LlamaConfig config = model->config();
    config.torch_dtype = model_dtype_name(model->dtype());
    llama_config_save(config, dir + "/config.json");
}

LlamaForCausalLM load_pretrained(const std::string& dir, torch::Dtype dtype) {
    const std::string config_path = dir + "/config.json";
    if (!model_file::exists(config_path))
        throw ModelError(dir + ": no config.json (expected a Hugging Face model directory)");
    const LlamaConfig config = llama_config_load(config_path);
    const WeightFiles files = find_weight_files(dir);

    // Validate every header against the config before reading any tensor data.
    std::map<std::string, SafetensorsEntry> entries;
    std::map<std::string, std::string> file_of;
    for (const auto& path : files.paths) {
        for (auto& [name, e] : safetensors_read_header(path)) {
            auto [it, fresh] = file_of.emplace(name, path);
            if (!fresh) throw ModelError(path + ": tensor '" + name + "' also appears in " + it->second);
            entries.emplace(name, std::move(e));
        }
    }
    for (const auto& [name, shard] : files.index_file_of) {
        const auto it = file_of.find(name);
        if (it == file_of.end())
            throw ModelError(files.described + ": weight_map puts tensor '" + name + "' in " + shard +
                             ", which does not hold it");
        if (it->second != shard)
            throw ModelError(files.described + ": weight_map puts tensor '" + name + "' in " + shard +
                             " but it is in " + it->second);
    }

    check_sizes_against_headers(config, entries, file_of, config_path);
    const double bytes = parameter_bytes(entries, dtype), machine = static_cast<double>(memory_fraction_bytes(1.0));
    if (bytes > machine)
        throw ModelError(files.described + ": the model needs " + byte_size_text(static_cast<uint64_t>(bytes)) +
                         " in " + model_dtype_name(dtype) + " but this machine has " +
                         byte_size_text(static_cast<uint64_t>(machine)) + " of memory");

    // Parameters are allocated, not drawn: every one is overwritten from the checkpoint below.
    LlamaForCausalLM model(config, ParameterInit{dtype, /*random=*/false});
    auto params = model->named_parameters(/*recurse=*/true);
    for (const auto& p : params) {
        const auto it = entries.find(p.key());
        if (it == entries.end())
            throw ModelError(files.described + ": missing tensor '" + p.key() + "' (expected shape " +
                             shape_string(p.value().sizes()) + " for " + config_path + ")");
        const SafetensorsEntry& e = it->second;
        if (e.shape != p.value().sizes().vec())
            throw ModelError(file_of[p.key()] + ": tensor '" + p.key() + "' has shape " + shape_string(e.shape) +
                             " but " + config_path + " implies " + shape_string(p.value().sizes()));
        if (!is_float_dtype(e.torch_dtype))
            throw ModelError(file_of[p.key()] + ": tensor '" + p.key() + "' has dtype " + e.dtype +
                             "; weights must be F32, F16, BF16 or F64");
        // A checkpoint whose tensors contradict its config.json was written by a broken export;
        // loading it anyway would hide that the two files do not belong together.
        if (!config.torch_dtype.empty() && e.torch_dtype != model_dtype_from_name(config.torch_dtype, "torch_dtype"))
            throw ModelError(file_of[p.key()] + ": tensor '" + p.key() + "' is " + e.dtype + " but " + config_path +
                             " says torch_dtype \"" + config.torch_dtype + "\"");
    }
    for (const auto& [name, e] : entries) {
        if (params.contains(name)) continue;
        // Tied checkpoints sometimes carry a copy of the embedding; transformers ignores it too.
        if (name == "lm_head.weight" && config.tie_word_embeddings) continue;
        // Older transformers versions saved the rotary inverse frequencies; we recompute them.
        if (ends_with(name, ".rotary_emb.inv_freq")) continue;
        throw ModelError(file_of[name] + ": unexpected tensor '" + name + "', not a parameter of the " +
                         config.model_type + " model " + config_path + " describes (tie_word_embeddings=" +
                         (config.tie_word_embeddings ? "true" : "false") + ")");
    }

    for (const auto& path : files.paths) {
        safetensors_read_into(path, [&](const std::string& name, const SafetensorsEntry&) {
            torch::Tensor* p = params.find(name);
            return p != nullptr ? *p : torch::Tensor();
        });
    }
    for (const auto& p : params) check_finite(p.key(), p.value(), file_of[p.key()]);
    return model;
}

}  // namespace h2tune
