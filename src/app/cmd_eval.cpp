// `h2tune eval`: accuracy of a model (plus an optional adapter) on a task, by label-likelihood
// scoring and by greedy generation with exact match.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>

#include "h2tune/app/cli.h"
#include "h2tune/app/command_options.h"
#include "h2tune/core/error.h"
#include "h2tune/model/safetensors.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/tokenizer/bpe_tokenizer.h"
#include "h2tune/train/evaluate.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

int cmd_eval(const Args& args) {
    po::options_description desc("eval options");
    desc.add_options()
        ("model-dir", po::value<std::string>()->required(), "model directory (config.json, model.safetensors)")
        ("tokenizer", po::value<std::string>(), "tokenizer.json (default: <model-dir>/tokenizer.json)")
        ("task", po::value<std::string>(), "built-in task name (data/tasks/<task>/test.jsonl)")
        ("test-file", po::value<std::string>(), "JSONL test file (instead of --task)")
        ("labels", po::value<std::string>(), "comma-separated label set (default: task.json, else the outputs seen)")
        ("adapter", po::value<std::string>(), "adapter safetensors written by 'h2tune train'")
        ("limit", po::value<int64_t>()->default_value(0), "evaluate the first N examples (0 = all)")
        ("max-seq-len", po::value<int>()->default_value(128), "maximum prompt + response tokens")
        ("no-generate", po::bool_switch(), "skip greedy generation")
        ("threads", po::value<int>()->default_value(0), "intra-op threads (0 = all cores)");
    po::variables_map vm;
    if (!parse_command_options("eval", "--model-dir DIR (--task NAME | --test-file FILE) [options]", desc, args, vm))
        return kExitOk;
    if (vm.count("task") == vm.count("test-file")) throw ConfigError("eval: give exactly one of --task and --test-file");
    // LibTorch's default here is 1 thread; 0 means every core.
    set_compute_threads(vm["threads"].as<int>());

    const std::string model_dir = vm["model-dir"].as<std::string>();
    const std::string tok_path = vm.count("tokenizer") ? vm["tokenizer"].as<std::string>()
                                                       : (fs::path(model_dir) / "tokenizer.json").string();
    BpeTokenizer tok = BpeTokenizer::from_file(tok_path);
    LlamaForCausalLM model = load_pretrained(model_dir);

    std::string test_file, task_file;
    if (vm.count("task")) {
        const fs::path dir = fs::path("data/tasks") / vm["task"].as<std::string>();
        test_file = (dir / "test.jsonl").string();
        task_file = (dir / "task.json").string();
    } else {
        test_file = vm["test-file"].as<std::string>();
    }
    auto test = read_jsonl(test_file);
    std::vector<std::string> labels;
    if (vm.count("labels")) {
        labels = split_labels(vm["labels"].as<std::string>());
    } else if (!task_file.empty() && fs::exists(task_file)) {
        labels = read_task_info(task_file).labels;
    }
    if (labels.empty()) labels = distinct_outputs(test);

    if (vm.count("adapter")) {
        const std::string path = vm["adapter"].as<std::string>();
        auto tensors = safetensors_load(path);
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
        load_adapter(adapted, path);
    }

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

}  // namespace h2tune
