#include "h2tune/app/base_model_pool.h"

#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "h2tune/io/file_fingerprint.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {
// One spelling per file or directory: absolute, symbolic links resolved where the path exists.
std::string canonical_key(const std::string& path) {
    std::error_code ec;
    const fs::path p = fs::weakly_canonical(fs::absolute(path), ec);
    return ec ? fs::absolute(path).lexically_normal().string() : p.string();
}
}  // namespace

PooledModel BaseModelPool::model(const std::string& model_dir, const std::string& tokenizer_path, torch::Dtype dtype,
                                 torch::Device device) {
    const std::string dir = canonical_key(model_dir);
    const std::string key = dir + "|" + model_dtype_name(dtype) + "|" + device.str();
    auto it = models_.find(key);
    if (it == models_.end()) {
        LlamaForCausalLM loaded = load_pretrained(model_dir, dtype);
        loaded->to(device);
        it = models_.emplace(key, loaded).first;
    }
    const std::string fingerprint_key = dir + "|" + canonical_key(tokenizer_path);
    auto fp = fingerprints_.find(fingerprint_key);
    if (fp == fingerprints_.end())
        fp = fingerprints_.emplace(fingerprint_key, model_fingerprint(model_dir, tokenizer_path)).first;
    return PooledModel{it->second, fp->second};
}

std::shared_ptr<const BpeTokenizer> BaseModelPool::tokenizer(const std::string& path) {
    const std::string key = canonical_key(path);
    auto it = tokenizers_.find(key);
    if (it == tokenizers_.end())
        it = tokenizers_.emplace(key, std::make_shared<const BpeTokenizer>(BpeTokenizer::from_file(path))).first;
    return it->second;
}

int64_t BaseModelPool::model_bytes() const {
    int64_t bytes = 0;
    for (const auto& [key, m] : models_) {
        for (const auto& p : m->parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
        for (const auto& b : m->buffers()) bytes += b.numel() * static_cast<int64_t>(b.element_size());
    }
    return bytes;
}

}  // namespace h2tune
