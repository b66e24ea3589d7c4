// `h2tune eval`: a model (plus an optional adapter) evaluated two ways:
//  * on a task: accuracy by label-likelihood scoring and by greedy generation with exact match;
//  * on a text file (--perplexity): mean token NLL and perplexity, optionally with every scored
//    token id and its log-probability written as JSON so another implementation can score the
//    same ids (docs/export.md).
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "h2tune/app/cli.h"
#include "h2tune/app/command_options.h"
#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "h2tune/io/checkpoint_dir.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/safetensors.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/evaluate.h"
#include "h2tune/train/perplexity.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

// Default window of --perplexity: the model's context, capped so that a long-context checkpoint
// (128k positions) does not need a quadratic attention matrix the size of the machine.
constexpr int64_t kMaxDefaultContext = 4096;

// A text read whole (an adapter's config, a --perplexity text): a regular file within a quarter of
// the node's memory.
std::string read_whole_file(const std::string& path, const std::string& option) {
    return read_input_file(path, InputFileRule{option + " file", memory_fraction_bytes(0.25)}, InputErrorKind::kData);
}

// The tensors of a PEFT LoRA adapter directory (`h2tune export` writes one) under the names
// `h2tune train` uses, with PEFT's scaling lora_alpha / r (or / sqrt(r) with rsLoRA) folded into
// lora_B as in h2tune's own adapter files.
std::map<std::string, torch::Tensor> read_peft_adapter_dir(const fs::path& dir) {
    const fs::path config_path = dir / "adapter_config.json";
    const fs::path weights_path = dir / "adapter_model.safetensors";
    if (!fs::exists(config_path) || !fs::exists(weights_path))
        throw ModelError("--adapter " + dir.string() + ": a directory must hold adapter_config.json and "
                         "adapter_model.safetensors (a PEFT LoRA adapter)");
    nlohmann::json cfg;
    double scale = 1.0;
    try {
        cfg = nlohmann::json::parse(read_whole_file(config_path.string(), "--adapter"));
        if (cfg.value("peft_type", "") != "LORA") throw ModelError(config_path.string() + ": peft_type is not \"LORA\"");
        if (cfg.value("use_dora", false) || cfg.value("bias", "none") != "none" || cfg.value("fan_in_fan_out", false))
            throw ModelError(config_path.string() + ": DoRA, LoRA biases and fan_in_fan_out are not supported");
        if (!cfg.value("rank_pattern", nlohmann::json::object()).empty() ||
            !cfg.value("alpha_pattern", nlohmann::json::object()).empty())
            throw ModelError(config_path.string() + ": per-module rank_pattern/alpha_pattern are not supported");
        const double r = cfg.at("r").get<double>(), lora_alpha = cfg.at("lora_alpha").get<double>();
        if (!(r > 0)) throw ModelError(config_path.string() + ": r must be positive");
        scale = cfg.value("use_rslora", false) ? lora_alpha / std::sqrt(r) : lora_alpha / r;
    } catch (const nlohmann::json::exception& e) {
        throw ModelError(config_path.string() + ": " + e.what());
    }
    const std::string prefix = "base_model.model.";
    std::map<std::string, torch::Tensor> out;
    for (auto& [name, t] : safetensors_load(weights_path.string())) {
        if (name.compare(0, prefix.size(), prefix) != 0)
            throw ModelError(weights_path.string() + ": tensor '" + name + "' lacks PEFT's '" + prefix + "' prefix");
        const std::string own = name.substr(prefix.size());
        const bool is_b = own.find(".lora_B.") != std::string::npos;
        out[own] = is_b && scale != 1.0 ? t.to(torch::kFloat32) * scale : t;
    }
    return out;
}

// Attaches an adapter: the file written by `h2tune train` (PEFT names, scale folded into B) or a
// PEFT LoRA adapter directory. Its rank and module types come from the tensors themselves.
void attach_saved_adapter(LlamaForCausalLM& model, const std::string& path) {
    const bool peft_dir = fs::is_directory(path);
    auto tensors = peft_dir ? read_peft_adapter_dir(path) : safetensors_load(path);
    std::set<std::string> types;
    int64_t rank = 0;
    for (const auto& [name, t] : tensors) {
        for (size_t m = 0; m < llama_projection_names().size(); ++m)
            if (name.find("." + llama_projection_names()[m] + ".lora_A") != std::string::npos) {
                types.insert(adapter_module_types()[m]);
                rank = t.size(0);
            }
    }
    if (types.empty() || rank == 0) throw ModelError(path + ": no LoRA tensors found");
    // B already carries the scale, so attach with alpha = r (scale 1).
    AdaptedModel adapted = attach_adapters(model, {types.begin(), types.end()}, rank, static_cast<double>(rank), 0);
    if (!peft_dir) {
        load_adapter(adapted, path);
        return;
    }
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < adapted.adapters.size(); ++i) {
        auto& ad = adapted.adapters[i];
        const auto a = tensors.find(adapted.names[i] + ".lora_A.weight");
        const auto b = tensors.find(adapted.names[i] + ".lora_B.weight");
        if (a == tensors.end() || b == tensors.end())
            throw ModelError(path + ": adapter tensors for " + adapted.names[i] + " are missing");
        if (!a->second.sizes().equals(ad->lora_A.sizes()) || !b->second.sizes().equals(ad->lora_B.sizes()))
            throw ModelError(path + ": adapter " + adapted.names[i] + " has rank or shape different from the model's");
        ad->lora_A.copy_(a->second.to(torch::kFloat32));
        ad->lora_B.copy_(b->second.to(torch::kFloat32));  // attached with scale 1; PEFT's scale is in B
        ad->set_middle({});
    }
}


void write_text_atomically(const std::string& path, const std::string& text) {
    const fs::path parent = fs::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (ec) throw IoError(parent.string() + ": cannot create directory: " + ec.message());
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out.flush()) throw IoError(tmp + ": cannot write");
    }
    publish_file(tmp, path);
}

int eval_perplexity(const po::variables_map& vm, LlamaForCausalLM& model, const BpeTokenizer& tok,
                    const std::string& model_dir, const std::string& tok_path) {
    const std::string text_file = vm["perplexity"].as<std::string>();
    const std::string text = read_whole_file(text_file, "--perplexity");
    if (text.empty()) throw DataError("--perplexity " + text_file + ": the file is empty");

    // The whole file is one document. It starts with the BOS id the model was trained with
    // (config.json's bos_token_id, else the tokenizer's), which is context only, never scored.
    const LlamaConfig& cfg = model->config();
    int64_t bos = -1;
    if (!vm["no-bos"].as<bool>()) bos = cfg.bos_token_id >= 0 ? cfg.bos_token_id : tok.bos_id();
    std::vector<int32_t> ids;
    if (bos >= 0) ids.push_back(static_cast<int32_t>(bos));
    const std::vector<int32_t> body = tok.encode(text);
    ids.insert(ids.end(), body.begin(), body.end());

    int64_t context = vm["context"].as<int64_t>();
    if (context < 0) throw ConfigError("--context: must be >= 2 (or 0 for the model's), got " + std::to_string(context));
    if (context == 0) context = std::min(cfg.max_position_embeddings, kMaxDefaultContext);
    if (context > cfg.max_position_embeddings)
        throw ConfigError("--context " + std::to_string(context) + ": exceeds the model's max_position_embeddings " +
                          std::to_string(cfg.max_position_embeddings));
    int64_t stride = vm["stride"].as<int64_t>();
    if (stride == 0) stride = std::max<int64_t>(1, context / 2);

    const auto t0 = std::chrono::steady_clock::now();
    const TokenLogProbs scores = score_token_sequence(model, ids, context, stride);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("perplexity %s: %zu tokens scored in %zu window(s) of <= %lld tokens (stride %lld), bos %s\n",
                text_file.c_str(), scores.logprob.size(), scores.windows.size(), static_cast<long long>(context),
                static_cast<long long>(stride), bos >= 0 ? std::to_string(bos).c_str() : "none");
    std::printf("mean NLL %.6f  perplexity %.4f  %.1fs\n", scores.mean_nll, scores.perplexity, seconds);

    if (vm.count("json")) {
        nlohmann::json windows = nlohmann::json::array();
        for (const auto& w : scores.windows) windows.push_back({w.begin, w.end, w.score_from});
        nlohmann::json j = {
            {"format", "h2tune-token-logprobs-1"},
            {"text_file", fs::absolute(text_file).string()},
            {"model_dir", fs::absolute(model_dir).string()},
            {"tokenizer", fs::absolute(tok_path).string()},
            // The base's compute dtype (--dtype): another implementation must score in the same one.
            {"dtype", model_dtype_name(model->dtype())},
            {"adapter", vm.count("adapter") ? nlohmann::json(fs::absolute(vm["adapter"].as<std::string>()).string())
                                            : nlohmann::json(nullptr)},
            {"bos_id", bos >= 0 ? nlohmann::json(bos) : nlohmann::json(nullptr)},
            {"context", context},
            {"stride", stride},
            {"windows", windows},
            {"ids", ids},
            {"logprobs", scores.logprob},
            {"tokens_scored", scores.logprob.size()},
            {"total_logprob", scores.total},
            {"mean_nll", scores.mean_nll},
            {"perplexity", scores.perplexity},
        };
        const std::string out = vm["json"].as<std::string>();
        write_text_atomically(out, j.dump(1) + "\n");
        std::printf("token log-probabilities in %s\n", out.c_str());
    }
    return kExitOk;
}

int eval_task(const po::variables_map& vm, LlamaForCausalLM& model, const BpeTokenizer& tok) {
    std::string test_file, task_file;
    if (vm.count("task")) {
        const fs::path dir = fs::path("data/tasks") / vm["task"].as<std::string>();
        test_file = (dir / "test.jsonl").string();
        task_file = (dir / "task.json").string();
    } else {
        test_file = vm["test-file"].as<std::string>();
    }
    auto test = read_jsonl(test_file, 0, "test file");
    std::vector<std::string> labels;
    if (vm.count("labels")) {
        labels = split_labels(vm["labels"].as<std::string>());
    } else if (!task_file.empty() && fs::exists(task_file)) {
        labels = read_task_info(task_file).labels;
    }
    if (labels.empty()) labels = distinct_outputs(test);

    auto encoded = encode_examples(test, tok, vm["max-seq-len"].as<int>(), test_file);
    std::vector<std::string> refs;
    for (const auto& e : test) refs.push_back(e.output);
    EvalOptions opt;
    opt.generate = !vm["no-generate"].as<bool>();
    opt.limit = vm["limit"].as<int64_t>();
    const auto t0 = std::chrono::steady_clock::now();
    EvalResult r = evaluate_classification(model, tok, encoded, refs, make_label_set(labels, tok), opt);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("examples %lld  majority %.4f  accuracy(score) %.4f", static_cast<long long>(r.examples),
                majority_rate(test), r.accuracy);
    if (r.accuracy_generate >= 0) std::printf("  accuracy(generate) %.4f", r.accuracy_generate);
    std::printf("  %.1fs\n", seconds);
    return kExitOk;
}

}  // namespace

int cmd_eval(const Args& args) {
    po::options_description desc("eval options");
    desc.add_options()
        ("model-dir", po::value<std::string>()->required(), "model directory (config.json, model.safetensors)")
        ("tokenizer", po::value<std::string>(), "tokenizer.json (default: <model-dir>/tokenizer.json)")
        ("task", po::value<std::string>(), "built-in task name (data/tasks/<task>/test.jsonl)")
        ("test-file", po::value<std::string>(), "JSONL test file (instead of --task)")
        ("perplexity", po::value<std::string>(), "text file: mean token NLL and perplexity (instead of a task)")
        ("json", po::value<std::string>(), "with --perplexity: write the scored ids and per-token log-probs here")
        ("context", po::value<int64_t>()->default_value(0),
         "with --perplexity: window length in tokens (0 = the model's max_position_embeddings, at most 4096)")
        ("stride", po::value<int64_t>()->default_value(0),
         "with --perplexity: tokens a window advances by (0 = context / 2)")
        ("no-bos", po::bool_switch(), "with --perplexity: do not start the document with the BOS id")
        ("labels", po::value<std::string>(), "comma-separated label set (default: task.json, else the outputs seen)")
        ("adapter", po::value<std::string>(), "adapter safetensors written by 'h2tune train', or a PEFT LoRA adapter "
                                              "directory ('h2tune export')")
        ("limit", po::value<int64_t>()->default_value(0), "evaluate the first N examples (0 = all)")
        ("max-seq-len", po::value<int>()->default_value(128), "maximum prompt + response tokens")
        ("no-generate", po::bool_switch(), "skip greedy generation")
        ("dtype", po::value<std::string>()->default_value("float32"),
         "dtype the base model is stored and computed in: float32, bfloat16 or float16 (as client.N.model_dtype; "
         "float16 needs a GPU, eval runs on the CPU); an adapter stays float32")
        ("threads", po::value<int>()->default_value(0), "intra-op threads (0 = all cores)");
    po::variables_map vm;
    if (!parse_command_options("eval", "--model-dir DIR (--task NAME | --test-file FILE | --perplexity FILE) [options]",
                               desc, args, vm))
        return kExitOk;
    const size_t modes = vm.count("task") + vm.count("test-file") + vm.count("perplexity");
    if (modes != 1) throw ConfigError("eval: give exactly one of --task, --test-file and --perplexity");
    const bool perplexity = vm.count("perplexity") > 0;
    if (!perplexity) {
        const bool given[] = {vm.count("json") > 0, !vm["context"].defaulted(), !vm["stride"].defaulted(),
                              vm["no-bos"].as<bool>()};
        const char* names[] = {"--json", "--context", "--stride", "--no-bos"};
        for (size_t i = 0; i < 4; ++i)
            if (given[i]) throw ConfigError(std::string("eval: ") + names[i] + " needs --perplexity");
    }
    // Parsed before anything is loaded so that a bad name fails fast with the option named.
    const torch::Dtype base_dtype = model_dtype_from_name(vm["dtype"].as<std::string>(), "--dtype");
    // eval computes on the CPU, where LibTorch 1.13 has no float16 matrix products (as in training).
    if (base_dtype == torch::kFloat16)
        throw ConfigError("--dtype float16: needs a CUDA device, and eval computes on the CPU; use bfloat16 or float32");
    // LibTorch's default here is 1 thread; 0 means every core.
    set_compute_threads(vm["threads"].as<int>());

    const std::string model_dir = vm["model-dir"].as<std::string>();
    const std::string tok_path = vm.count("tokenizer") ? vm["tokenizer"].as<std::string>()
                                                       : (fs::path(model_dir) / "tokenizer.json").string();
    BpeTokenizer tok = BpeTokenizer::from_file(tok_path);
    LlamaForCausalLM model = load_pretrained(model_dir, base_dtype);
    if (vm.count("adapter")) attach_saved_adapter(model, vm["adapter"].as<std::string>());
    return perplexity ? eval_perplexity(vm, model, tok, model_dir, tok_path) : eval_task(vm, model, tok);
}

}  // namespace h2tune
