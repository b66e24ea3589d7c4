// `h2tune pretrain`: causal-LM pretraining of a built-in size on a text corpus, and
// `h2tune tokenizer`: training the byte-level BPE tokenizer the family shares.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "h2tune/app/build_info.h"
#include "h2tune/app/cli.h"
#include "h2tune/app/command_options.h"
#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "h2tune/core/rng.h"
#include "h2tune/io/file_fingerprint.h"
#include "h2tune/model/llama.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/finetune.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

// A corpus is read whole; a quarter of the machine's memory leaves room for its tokens.
std::string read_text(const std::string& path) {
    return read_input_file(path, InputFileRule{"corpus file", memory_fraction_bytes(0.25)}, InputErrorKind::kData);
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

po::options_description pretrain_options() {
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
    return desc;
}

// The command line, checked.
struct PretrainSettings {
    std::string model, tokenizer, corpus, heldout, out;
    int64_t steps = 0, batch = 0, len = 0, warmup = 0, log_every = 1;
    double lr = 0, weight_decay = 0;
    uint64_t seed = 0;
    int threads = 0;
};

PretrainSettings read_settings(const po::variables_map& vm) {
    PretrainSettings s;
    s.model = vm["model"].as<std::string>();
    s.tokenizer = vm["tokenizer"].as<std::string>();
    s.corpus = vm["corpus"].as<std::string>();
    s.heldout = vm["heldout"].as<std::string>();
    s.out = vm["out"].as<std::string>();
    s.steps = vm["steps"].as<int64_t>();
    s.batch = vm["batch-size"].as<int64_t>();
    s.len = vm["seq-len"].as<int64_t>();
    s.lr = vm["lr"].as<double>();
    s.warmup = vm["warmup"].as<int64_t>();
    s.weight_decay = vm["weight-decay"].as<double>();
    s.seed = vm["seed"].as<uint64_t>();
    s.threads = vm["threads"].as<int>();
    s.log_every = std::max<int64_t>(1, vm["log-every"].as<int64_t>());
    if (s.steps < 1 || s.batch < 1 || s.len < 8)
        throw ConfigError("pretrain: --steps, --batch-size >= 1 and --seq-len >= 8 required");
    if (!(s.lr > 0)) throw ConfigError("pretrain: --lr must be positive");
    return s;
}

// Training and held-out text as token streams.
struct Corpus {
    std::vector<int32_t> train, heldout;
};

Corpus load_corpus(const PretrainSettings& s, const BpeTokenizer& tok) {
    const auto t_encode = std::chrono::steady_clock::now();
    Corpus c;
    c.train = encode_corpus(s.corpus, tok);
    c.heldout = encode_corpus(s.heldout, tok);
    if (static_cast<int64_t>(c.train.size()) <= s.len + 1)
        throw DataError("pretrain: corpus is shorter than one sequence");
    std::printf("pretrain: corpus %zu tokens, held-out %zu tokens (encoded in %.1fs)\n", c.train.size(),
                c.heldout.size(), std::chrono::duration<double>(std::chrono::steady_clock::now() - t_encode).count());
    return c;
}

// The preset with the tokenizer's vocabulary and special tokens.
LlamaConfig model_config(const PretrainSettings& s, const BpeTokenizer& tok) {
    LlamaConfig cfg = llama_preset(s.model, tok.vocab_size());
    cfg.bos_token_id = tok.bos_id();
    cfg.eos_token_id = tok.eos_id();
    cfg.pad_token_id = tok.pad_id();
    return cfg;
}

// A fresh model whose initial weights depend on the seed only.
LlamaForCausalLM init_model(const PretrainSettings& s, const LlamaConfig& cfg) {
    torch::manual_seed(stream_key(s.seed, 0x9e7a) & 0x7fffffffffffffffULL);
    LlamaForCausalLM model(cfg);
    model->train();
    std::printf("pretrain: %s, %lld parameters, %lld steps of %lld x %lld tokens, %d threads\n", s.model.c_str(),
                static_cast<long long>(llama_parameter_count(cfg)), static_cast<long long>(s.steps),
                static_cast<long long>(s.batch), static_cast<long long>(s.len), torch::get_num_threads());
    return model;
}

struct TrainResult {
    double smoothed_loss = 0;  // exponential moving average of the step losses
    double seconds = 0;        // the optimiser steps only
};

void print_progress(const PretrainSettings& s, int64_t step, double smoothed, double elapsed) {
    const double tps = static_cast<double>((step + 1) * s.batch * s.len) / elapsed;
    std::printf("step %lld/%lld  loss %.4f  %.0f tokens/s  ETA %.0fs\n", static_cast<long long>(step + 1),
                static_cast<long long>(s.steps), smoothed, tps,
                elapsed / static_cast<double>(step + 1) * static_cast<double>(s.steps - step - 1));
    std::fflush(stdout);
}

// AdamW with a cosine schedule on random windows of the training stream.
TrainResult train_steps(LlamaForCausalLM& model, const std::vector<int32_t>& train, const PretrainSettings& s) {
    FinetuneOptions opt;
    opt.schedule.lr = s.lr;
    opt.schedule.total_steps = s.steps;
    opt.schedule.warmup_steps = s.warmup;
    opt.weight_decay = s.weight_decay;
    AdapterTrainer trainer(model->parameters(), opt);

    const auto t0 = std::chrono::steady_clock::now();
    TrainResult r;
    for (int64_t step = 0; step < s.steps; ++step) {
        torch::Tensor ids = window_batch(train, s.batch, s.len, stream_key(s.seed, 0x5e9, static_cast<uint64_t>(step)));
        torch::Tensor loss = response_loss(model->forward(ids), ids);
        trainer.step(loss);
        const double l = loss.item<double>();
        r.smoothed_loss = step == 0 ? l : 0.95 * r.smoothed_loss + 0.05 * l;
        if ((step + 1) % s.log_every == 0 || step + 1 == s.steps)
            print_progress(s, step, r.smoothed_loss,
                           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

// The model directory (config.json, model.safetensors, tokenizer.json) and pretrain.json, the log.
void save_outputs(LlamaForCausalLM& model, const BpeTokenizer& tok, const LlamaConfig& cfg, const PretrainSettings& s,
                  const Corpus& corpus, const TrainResult& r, double held) {
    const fs::path out = s.out;
    save_pretrained(model, out.string());
    tok.save((out / "tokenizer.json").string());
    nlohmann::json log = {{"model", s.model},
                          {"parameters", llama_parameter_count(cfg)},
                          {"steps", s.steps},
                          {"batch_size", s.batch},
                          {"seq_len", s.len},
                          {"lr", s.lr},
                          {"seed", s.seed},
                          {"train_tokens", corpus.train.size()},
                          {"final_train_loss", r.smoothed_loss},
                          {"heldout_loss", held},
                          {"seconds", r.seconds},
                          {"tokens_per_second", static_cast<double>(s.steps * s.batch * s.len) / r.seconds},
                          // Provenance: which weights these are (the fingerprint every run that
                          // uses them records in metrics.h5 and `h2tune report` prints) and what
                          // made them (pretraining is deterministic on one machine and build, not
                          // across CPUs or BLAS builds).
                          {"model_type", cfg.model_type},
                          {"fingerprint", model_fingerprint(out.string(), (out / "tokenizer.json").string())},
                          {"git_sha", git_sha()},
                          {"cpu_model", cpu_model()},
                          {"torch_version", torch_version()}};
    std::ofstream(out / "pretrain.json") << log.dump(2) << "\n";
    std::printf("pretrain: wrote %s\n", out.string().c_str());
}

}  // namespace

int cmd_pretrain(const Args& args) {
    po::options_description desc = pretrain_options();
    po::variables_map vm;
    if (!parse_command_options("pretrain", "--model NAME --tokenizer FILE --corpus FILE --heldout FILE --out DIR",
                               desc, args, vm))
        return kExitOk;
    const PretrainSettings s = read_settings(vm);
    // LibTorch's default here is 1 thread; 0 means every core.
    set_compute_threads(s.threads);

    BpeTokenizer tok = BpeTokenizer::from_file(s.tokenizer);
    const Corpus corpus = load_corpus(s, tok);
    const LlamaConfig cfg = model_config(s, tok);
    LlamaForCausalLM model = init_model(s, cfg);
    const TrainResult r = train_steps(model, corpus.train, s);
    const double held = heldout_loss(model, corpus.heldout, s.len, 256);
    std::printf("pretrain: held-out loss %.4f (perplexity %.1f) after %.0fs\n", held, std::exp(held), r.seconds);
    save_outputs(model, tok, cfg, s, corpus, r, held);
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
    const bool any_text = std::any_of(docs.begin(), docs.end(), [](const std::string& d) {
        return d.find_first_not_of(" \t\r\n") != std::string::npos;
    });
    if (!any_text)
        throw DataError("tokenizer: --corpus " + corpora.front() + (corpora.size() > 1 ? " (and the others)" : "") +
                        ": no text to learn merges from; a tokenizer trained on it would hold only the 256 bytes");
    BpeTrainOptions opt;
    opt.vocab_size = vm["vocab-size"].as<int32_t>();
    opt.min_frequency = vm["min-frequency"].as<int64_t>();
    const auto t0 = std::chrono::steady_clock::now();
    BpeTokenizer tok = bpe_train(docs, opt);
    const fs::path out = vm["out"].as<std::string>();
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    tok.save(out.string());
    if (tok.vocab_size() < opt.vocab_size)
        std::fprintf(stderr, "tokenizer: warning: the corpus supports only %d of the %d tokens asked for (--vocab-size); "
                             "no pair left occurs --min-frequency times\n", tok.vocab_size(), opt.vocab_size);
    std::printf("tokenizer: %d tokens from %zu documents in %.1fs -> %s\n", tok.vocab_size(), docs.size(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), out.string().c_str());
    return kExitOk;
}

}  // namespace h2tune
