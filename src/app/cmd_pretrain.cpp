// `h2tune pretrain`: causal-LM pretraining of a built-in size on a text corpus, and
// `h2tune tokenizer`: training the byte-level BPE tokenizer the family shares.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "h2tune/app/cli.h"
#include "h2tune/app/command_options.h"
#include "h2tune/core/error.h"
#include "h2tune/core/rng.h"
#include "h2tune/model/llama.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/finetune.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw DataError(path + ": cannot open corpus file");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// Documents are separated by blank lines.
std::vector<std::string> split_documents(const std::string& text) {
    std::vector<std::string> docs;
    size_t start = 0;
    while (start < text.size()) {
        size_t end = text.find("\n\n", start);
        if (end == std::string::npos) end = text.size();
        if (end > start) docs.push_back(text.substr(start, end - start));
        start = end + 2;
    }
    return docs;
}

// The corpus as one token stream with EOS between documents.
std::vector<int32_t> encode_corpus(const std::string& path, const BpeTokenizer& tok) {
    std::vector<int32_t> stream;
    for (const auto& doc : split_documents(read_text(path))) {
        auto ids = tok.encode(doc);
        stream.insert(stream.end(), ids.begin(), ids.end());
        stream.push_back(tok.eos_id());
    }
    return stream;
}

torch::Tensor window_batch(const std::vector<int32_t>& stream, int64_t batch, int64_t len, uint64_t key) {
    SplitMix64 rng(key);
    const uint64_t span = static_cast<uint64_t>(stream.size()) - static_cast<uint64_t>(len);
    torch::Tensor out = torch::empty({batch, len}, torch::kInt64);
    auto acc = out.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch; ++b) {
        const size_t start = static_cast<size_t>(rng.below(span));
        for (int64_t t = 0; t < len; ++t) acc[b][t] = stream[start + static_cast<size_t>(t)];
    }
    return out;
}

double heldout_loss(LlamaForCausalLM& model, const std::vector<int32_t>& stream, int64_t len, int64_t max_windows) {
    torch::NoGradGuard no_grad;
    model->eval();
    const int64_t windows = std::min<int64_t>(max_windows, static_cast<int64_t>(stream.size()) / len);
    if (windows < 1) throw DataError("held-out text is shorter than one sequence");
    double total = 0;
    const int64_t chunk = 16;
    for (int64_t w = 0; w < windows; w += chunk) {
        const int64_t n = std::min(chunk, windows - w);
        torch::Tensor ids = torch::empty({n, len}, torch::kInt64);
        auto acc = ids.accessor<int64_t, 2>();
        for (int64_t b = 0; b < n; ++b)
            for (int64_t t = 0; t < len; ++t) acc[b][t] = stream[static_cast<size_t>((w + b) * len + t)];
        total += response_loss(model->forward(ids), ids).item<double>() * static_cast<double>(n);
    }
    model->train();
    return total / static_cast<double>(windows);
}

}  // namespace

int cmd_pretrain(const Args& args) {
    po::options_description desc("pretrain options");
    desc.add_options()
        ("model", po::value<std::string>()->required(), "built-in size (h2-tiny, h2-small, h2-base)")
        ("tokenizer", po::value<std::string>()->required(), "tokenizer.json (from 'h2tune tokenizer')")
        ("corpus", po::value<std::string>()->required(), "training text, documents separated by blank lines")
        ("heldout", po::value<std::string>()->required(), "held-out text for the final loss")
        ("out", po::value<std::string>()->required(), "output directory (config.json, model.safetensors, tokenizer.json)")
        ("steps", po::value<int64_t>()->default_value(2000), "optimiser steps")
        ("batch-size", po::value<int64_t>()->default_value(16), "sequences per step")
        ("seq-len", po::value<int64_t>()->default_value(128), "tokens per sequence")
        ("lr", po::value<double>()->default_value(2e-3), "peak learning rate (AdamW, cosine)")
        ("warmup", po::value<int64_t>()->default_value(100), "warm-up steps")
        ("weight-decay", po::value<double>()->default_value(0.01), "AdamW weight decay")
        ("seed", po::value<uint64_t>()->default_value(1234), "random seed")
        ("threads", po::value<int>()->default_value(0), "intra-op threads (0 = all cores)")
        ("log-every", po::value<int64_t>()->default_value(100), "progress line every N steps");
    po::variables_map vm;
    if (!parse_command_options("pretrain", "--model NAME --tokenizer FILE --corpus FILE --heldout FILE --out DIR",
                               desc, args, vm))
        return kExitOk;
    const int64_t steps = vm["steps"].as<int64_t>(), batch = vm["batch-size"].as<int64_t>(),
                  len = vm["seq-len"].as<int64_t>();
    if (steps < 1 || batch < 1 || len < 8) throw ConfigError("pretrain: --steps, --batch-size >= 1 and --seq-len >= 8 required");
    if (!(vm["lr"].as<double>() > 0)) throw ConfigError("pretrain: --lr must be positive");
    // LibTorch's default here is 1 thread; 0 means every core.
    set_compute_threads(vm["threads"].as<int>());
    const uint64_t seed = vm["seed"].as<uint64_t>();

    BpeTokenizer tok = BpeTokenizer::from_file(vm["tokenizer"].as<std::string>());
    const auto t_encode = std::chrono::steady_clock::now();
    auto train = encode_corpus(vm["corpus"].as<std::string>(), tok);
    auto heldout = encode_corpus(vm["heldout"].as<std::string>(), tok);
    if (static_cast<int64_t>(train.size()) <= len + 1) throw DataError("pretrain: corpus is shorter than one sequence");
    std::printf("pretrain: corpus %zu tokens, held-out %zu tokens (encoded in %.1fs)\n", train.size(), heldout.size(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t_encode).count());

    LlamaConfig cfg = llama_preset(vm["model"].as<std::string>(), tok.vocab_size());
    cfg.bos_token_id = tok.bos_id();
    cfg.eos_token_id = tok.eos_id();
    cfg.pad_token_id = tok.pad_id();
    torch::manual_seed(stream_key(seed, 0x9e7a) & 0x7fffffffffffffffULL);
    LlamaForCausalLM model(cfg);
    model->train();
    std::printf("pretrain: %s, %lld parameters, %lld steps of %lld x %lld tokens, %d threads\n",
                vm["model"].as<std::string>().c_str(), static_cast<long long>(llama_parameter_count(cfg)),
                static_cast<long long>(steps), static_cast<long long>(batch), static_cast<long long>(len),
                torch::get_num_threads());

    FinetuneOptions opt;
    opt.schedule.lr = vm["lr"].as<double>();
    opt.schedule.total_steps = steps;
    opt.schedule.warmup_steps = vm["warmup"].as<int64_t>();
    opt.weight_decay = vm["weight-decay"].as<double>();
    AdapterTrainer trainer(model->parameters(), opt);

    const auto t0 = std::chrono::steady_clock::now();
    double smoothed = 0;
    const int64_t log_every = std::max<int64_t>(1, vm["log-every"].as<int64_t>());
    for (int64_t step = 0; step < steps; ++step) {
        torch::Tensor ids = window_batch(train, batch, len, stream_key(seed, 0x5e9, static_cast<uint64_t>(step)));
        torch::Tensor loss = response_loss(model->forward(ids), ids);
        trainer.step(loss);
        const double l = loss.item<double>();
        smoothed = step == 0 ? l : 0.95 * smoothed + 0.05 * l;
        if ((step + 1) % log_every == 0 || step + 1 == steps) {
            const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double tps = static_cast<double>((step + 1) * batch * len) / elapsed;
            std::printf("step %lld/%lld  loss %.4f  %.0f tokens/s  ETA %.0fs\n", static_cast<long long>(step + 1),
                        static_cast<long long>(steps), smoothed, tps,
                        elapsed / static_cast<double>(step + 1) * static_cast<double>(steps - step - 1));
            std::fflush(stdout);
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double held = heldout_loss(model, heldout, len, 256);
    std::printf("pretrain: held-out loss %.4f (perplexity %.1f) after %.0fs\n", held, std::exp(held), seconds);

    const fs::path out = vm["out"].as<std::string>();
    save_pretrained(model, out.string());
    tok.save((out / "tokenizer.json").string());
    nlohmann::json log = {{"model", vm["model"].as<std::string>()},
                          {"parameters", llama_parameter_count(cfg)},
                          {"steps", steps},
                          {"batch_size", batch},
                          {"seq_len", len},
                          {"lr", opt.schedule.lr},
                          {"seed", seed},
                          {"train_tokens", train.size()},
                          {"final_train_loss", smoothed},
                          {"heldout_loss", held},
                          {"seconds", seconds},
                          {"tokens_per_second", static_cast<double>(steps * batch * len) / seconds}};
    std::ofstream(out / "pretrain.json") << log.dump(2) << "\n";
    std::printf("pretrain: wrote %s\n", out.string().c_str());
    return kExitOk;
}

int cmd_tokenizer(const Args& args) {
    po::options_description desc("tokenizer options");
    std::vector<std::string> corpora;
    desc.add_options()
        ("corpus", po::value<std::vector<std::string>>(&corpora)->required(), "training text file(s)")
        ("vocab-size", po::value<int32_t>()->default_value(4096), "vocabulary size including specials")
        ("min-frequency", po::value<int64_t>()->default_value(2), "minimum pair count for a merge")
        ("out", po::value<std::string>()->required(), "tokenizer.json to write");
    po::variables_map vm;
    if (!parse_command_options("tokenizer", "--corpus FILE [--corpus FILE ...] --out tokenizer.json", desc, args, vm))
        return kExitOk;
    if (vm["vocab-size"].as<int32_t>() < 260) throw ConfigError("tokenizer: --vocab-size must be at least 260");
    std::vector<std::string> docs;
    for (const auto& c : corpora)
        for (auto& d : split_documents(read_text(c))) docs.push_back(std::move(d));
    BpeTrainOptions opt;
    opt.vocab_size = vm["vocab-size"].as<int32_t>();
    opt.min_frequency = vm["min-frequency"].as<int64_t>();
    const auto t0 = std::chrono::steady_clock::now();
    BpeTokenizer tok = bpe_train(docs, opt);
    const fs::path out = vm["out"].as<std::string>();
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    tok.save(out.string());
    std::printf("tokenizer: %d tokens from %zu documents in %.1fs -> %s\n", tok.vocab_size(), docs.size(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), out.string().c_str());
    return kExitOk;
}

}  // namespace h2tune
