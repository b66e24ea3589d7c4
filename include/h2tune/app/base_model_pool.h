// The frozen base models and tokenizers of the clients on one rank. Clients that name the same
// model files, dtype and device get one model in memory (and clients of one tokenizer file one
// tokenizer): a rank simulating 64 clients of one checkpoint holds its weights once, and each
// client only its adapters, optimiser moments, shared-middle state and encoded data. A shared
// model carries the adapters of whichever client ran last; AdaptedModel::activate() puts a
// client's own back before each of its forwards (ClientRuntime does so on every entry point).
// Knows nothing of MPI or HDF5.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "h2tune/model/llama.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"

namespace h2tune {

struct PooledModel {
    LlamaForCausalLM model{nullptr};
    std::string fingerprint;  // model_fingerprint(model_dir, tokenizer) as loaded (io/file_fingerprint.h)
};

class BaseModelPool {
public:
    // The model in `model_dir` stored in `dtype` on `device`, loaded on the first request and
    // shared by every later one with the same files, dtype and device. Directories are compared
    // after resolving symbolic links and relative paths, so "data/models/x" and "./data/models/x/"
    // are one model. `tokenizer_path` only enters the fingerprint.
    PooledModel model(const std::string& model_dir, const std::string& tokenizer_path, torch::Dtype dtype,
                      torch::Device device);
    // The tokenizer in `path`, read once per file.
    std::shared_ptr<const BpeTokenizer> tokenizer(const std::string& path);

    int64_t models_loaded() const { return static_cast<int64_t>(models_.size()); }
    // Bytes of the distinct frozen bases held (parameters and buffers).
    int64_t model_bytes() const;

private:
    std::map<std::string, LlamaForCausalLM> models_;               // canonical dir | dtype | device
    std::map<std::string, std::string> fingerprints_;               // canonical dir | tokenizer
    std::map<std::string, std::shared_ptr<const BpeTokenizer>> tokenizers_;  // canonical path
};

}  // namespace h2tune
