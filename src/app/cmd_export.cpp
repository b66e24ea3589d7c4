// `h2tune export`: what a user takes away from a run. From OUTPUT/job.ini (or /config in
// metrics.h5) it finds the client's model directory, rank and adapted modules, checks
// OUTPUT/adapters/client_K.safetensors against them, and writes either
//  * a PEFT 0.13 LoRA adapter directory (adapter_config.json + adapter_model.safetensors with
//    PEFT's key names), or
//  * with --merged, a full Hugging Face model directory with W = W0 + B A in the base checkpoint's
//    dtype, the base's config.json and tokenizer files.
// The adapter file's B already holds s B (T + I) (train/adapted_model.h), so the PEFT config says
// lora_alpha = r: PEFT's scaling lora_alpha / r is then exactly 1 and the file's tensors are used
// bit for bit.
#include "h2tune/app/cmd_export.h"

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "h2tune/app/checkpoint.h"
#include "h2tune/app/client_runtime.h"
#include "h2tune/app/command_options.h"
#include "h2tune/core/error.h"
#include "h2tune/core/input_file.h"
#include "h2tune/core/methods.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/shape_text.h"
#include "h2tune/io/checkpoint_dir.h"
#include "h2tune/io/hdf5_file.h"
#include "h2tune/model/llama.h"
#include "h2tune/model/safetensors.h"
#include "h2tune/train/adapted_model.h"
#include "h2tune/train/lora_merge.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

// PEFT prefixes every key of a saved causal-LM adapter with the wrapper's attribute path.
constexpr const char* kPeftKeyPrefix = "base_model.model.";

// Tokenizer and generation files of a Hugging Face model directory that a merged export carries
// over unchanged (tokenizer.json itself comes from the client's tokenizer path).
const std::vector<std::string>& companion_files() {
    static const std::vector<std::string> files = {"tokenizer_config.json", "special_tokens_map.json",
                                                   "generation_config.json", "tokenizer.model"};
    return files;
}

// The run's job copy and a shard index: small text files (a regular file of at most 64 MiB).
std::string read_text(const std::string& path) {
    return read_input_file(path, InputFileRule{"file", 64u << 20}, InputErrorKind::kIo);
}

void write_text_atomically(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out.flush()) throw IoError(tmp + ": cannot write");
    }
    publish_file(tmp, path);
}

// The job a run directory was trained with: job.ini beside the outputs, else /config in metrics.h5.
JobConfig read_run_job(const fs::path& run, std::string& source) {
    const fs::path ini = run / "job.ini";
    const fs::path metrics = run / "metrics.h5";
    if (fs::exists(ini)) {
        source = ini.string();
        return parse_job_config(read_text(source), source);
    }
    if (fs::exists(metrics)) {
        source = metrics.string() + ":/config";
        Hdf5File f(metrics.string(), Hdf5File::Mode::ReadOnly);
        if (!f.exists("/config")) throw ModelError(metrics.string() + ": no /config dataset (and no job.ini beside it)");
        return parse_job_config(f.read_string("/config"), source);
    }
    throw ConfigError("--run " + run.string() + ": neither job.ini nor metrics.h5 found; not an output directory of "
                      "'h2tune train'");
}

// The weight files of a Hugging Face model directory, as load_pretrained reads them.
struct BaseCheckpoint {
    std::vector<std::string> files;  // file names inside the directory
    std::string index;               // "model.safetensors.index.json" when sharded, else ""
};

BaseCheckpoint find_base_checkpoint(const fs::path& dir) {
    if (fs::exists(dir / "model.safetensors")) return {{"model.safetensors"}, ""};
    const fs::path index = dir / "model.safetensors.index.json";
    if (!fs::exists(index)) throw ModelError(dir.string() + ": neither model.safetensors nor model.safetensors.index.json found");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(read_text(index.string()));
    } catch (const nlohmann::json::exception& e) {
        throw ModelError(index.string() + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw ModelError(index.string() + ": no \"weight_map\" object");
    std::set<std::string> shards;
    for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos)
            throw ModelError(index.string() + ": weight_map entry '" + tensor + "' is not a plain file name");
        shards.insert(file.get<std::string>());
    }
    return {{shards.begin(), shards.end()}, "model.safetensors.index.json"};
}

// One adapted projection: its name ("model.layers.3.self_attn.q_proj") and PEFT-style factors.
struct AdaptedProjection {
    std::string name;
    torch::Tensor lora_A;  // [r, d_in]
    torch::Tensor lora_B;  // [d_out, r], scale folded in
};

// Everything export needs to know about one client of a run.
struct ClientExport {
    std::string run_dir, job_source, method;
    bool merges_into_base = false;  // the method merges aggregated updates into W0 (FLoRA)
    int client = 0;
    ClientConfig config;
    ClientPaths paths;
    int64_t rank = 0;
    double alpha = 0;
    std::vector<std::string> modules;     // PEFT target module names ("q_proj", ...), sorted
    std::string adapter_path;
    std::vector<AdaptedProjection> projections;  // in the order attach_adapters creates them
};

std::string projection_module_name(const std::string& type) {
    const auto& types = adapter_module_types();
    const auto it = std::find(types.begin(), types.end(), type);
    if (it == types.end()) throw ConfigError("federation.modules: unknown module type '" + type + "'");
    return llama_projection_names()[static_cast<size_t>(it - types.begin())];
}

ClientExport load_client_export(const std::string& run_dir, int client) {
    ClientExport ex;
    ex.run_dir = run_dir;
    ex.client = client;
    if (!fs::is_directory(run_dir)) throw ConfigError("--run " + run_dir + ": no such directory");
    const JobConfig job = read_run_job(run_dir, ex.job_source);
    const int clients = static_cast<int>(job.clients.size());
    if (client < 0 || client >= clients)
        throw ConfigError("--client " + std::to_string(client) + ": out of range; the run in " + run_dir + " has " +
                          std::to_string(clients) + " client" + (clients == 1 ? "" : "s") + " (0.." +
                          std::to_string(clients - 1) + ", " + ex.job_source + ")");
    ex.method = job.run.method;
    ex.merges_into_base = method_spec(ex.method).lora.merge;
    ex.config = job.clients[static_cast<size_t>(client)];
    ex.paths = resolve_client_paths(ex.config);
    ex.rank = ex.config.effective_rank(job.federation.max_rank);
    ex.alpha = job.federation.alpha;
    const std::string key = "client." + std::to_string(client);
    if (!fs::exists(fs::path(ex.paths.model_dir) / "config.json"))
        throw ModelError(key + ": model directory '" + ex.paths.model_dir + "' (from " + ex.job_source +
                         ") has no config.json; relative paths are resolved from the working directory, so run "
                         "'h2tune export' where the run was started");

    // The projections attach_adapters adapted: layer by layer, q..down among federation.modules.
    const LlamaConfig base = llama_config_load((fs::path(ex.paths.model_dir) / "config.json").string());
    std::vector<std::string> names;
    std::set<std::string> module_names;
    const auto& types = adapter_module_types();
    for (int64_t layer = 0; layer < base.num_hidden_layers; ++layer)
        for (size_t m = 0; m < types.size(); ++m) {
            if (std::find(job.federation.modules.begin(), job.federation.modules.end(), types[m]) ==
                job.federation.modules.end())
                continue;
            names.push_back("model.layers." + std::to_string(layer) + "." + (m < 4 ? "self_attn." : "mlp.") +
                            llama_projection_names()[m]);
        }
    for (const auto& t : job.federation.modules) module_names.insert(projection_module_name(t));
    ex.modules.assign(module_names.begin(), module_names.end());

    ex.adapter_path = (fs::path(run_dir) / "adapters" / ("client_" + std::to_string(client) + ".safetensors")).string();
    if (!fs::exists(ex.adapter_path))
        throw ModelError(ex.adapter_path + ": no adapter file for " + key + "; 'h2tune train' writes it when the run "
                         "completes (a stopped run continues with 'h2tune train --resume " + run_dir + "')");
    auto tensors = safetensors_load(ex.adapter_path);
    std::set<std::string> expected;
    for (const auto& n : names) {
        AdaptedProjection p;
        p.name = n;
        const auto a = tensors.find(n + ".lora_A.weight"), b = tensors.find(n + ".lora_B.weight");
        if (a == tensors.end() || b == tensors.end())
            throw ModelError(ex.adapter_path + ": no lora_A/lora_B tensors for " + n + " (" + ex.job_source +
                             " adapts " + std::to_string(names.size()) + " projections)");
        p.lora_A = a->second.to(torch::kFloat32);
        p.lora_B = b->second.to(torch::kFloat32);
        if (p.lora_A.dim() != 2 || p.lora_B.dim() != 2 || p.lora_A.size(0) != ex.rank || p.lora_B.size(1) != ex.rank)
            throw ModelError(ex.adapter_path + ": " + n + " has lora_A " + shape_string(p.lora_A.sizes()) +
                             " and lora_B " + shape_string(p.lora_B.sizes()) + ", but " + ex.job_source +
                             " gives " + key + " rank " + std::to_string(ex.rank));
        expected.insert(n + ".lora_A.weight");
        expected.insert(n + ".lora_B.weight");
        ex.projections.push_back(std::move(p));
    }
    for (const auto& [name, t] : tensors)
        if (!expected.count(name))
            throw ModelError(ex.adapter_path + ": unexpected tensor '" + name + "' (not a projection " + ex.job_source +
                             " adapts)");
    return ex;
}

// Checks every adapted projection against the base checkpoint's weight shapes (headers only).
void check_against_base(const ClientExport& ex, const BaseCheckpoint& base) {
    std::map<std::string, std::vector<int64_t>> shapes;
    for (const auto& f : base.files)
        for (const auto& [name, e] : safetensors_read_header((fs::path(ex.paths.model_dir) / f).string()))
            shapes[name] = e.shape;
    for (const auto& p : ex.projections) {
        const auto it = shapes.find(p.name + ".weight");
        if (it == shapes.end()) throw ModelError(ex.paths.model_dir + ": no tensor " + p.name + ".weight for the adapter");
        const std::vector<int64_t> want = {p.lora_B.size(0), p.lora_A.size(1)};
        if (it->second != want)
            throw ModelError(ex.adapter_path + ": " + p.name + " adapts a " + shape_string(want) + " map but " +
                             ex.paths.model_dir + " holds " + shape_string(it->second));
    }
}

// PEFT 0.13's LoraConfig as save_pretrained writes it (every field, sorted keys).
nlohmann::json peft_adapter_config(const ClientExport& ex, const std::string& base_model) {
    nlohmann::json j = {
        {"alpha_pattern", nlohmann::json::object()},
        {"auto_mapping", nullptr},
        {"base_model_name_or_path", base_model},
        {"bias", "none"},
        {"fan_in_fan_out", false},
        {"inference_mode", true},
        {"init_lora_weights", true},
        {"layer_replication", nullptr},
        {"layers_pattern", nullptr},
        {"layers_to_transform", nullptr},
        {"loftq_config", nlohmann::json::object()},
        // The scale alpha / r is already in lora_B; lora_alpha = r makes PEFT's scaling 1.
        {"lora_alpha", ex.rank},
        {"lora_dropout", 0.0},
        {"megatron_config", nullptr},
        {"megatron_core", "megatron.core"},
        {"modules_to_save", nullptr},
        {"peft_type", "LORA"},
        {"r", ex.rank},
        {"rank_pattern", nlohmann::json::object()},
        {"revision", nullptr},
        {"target_modules", ex.modules},
        {"task_type", "CAUSAL_LM"},
        {"use_dora", false},
        {"use_rslora", false},
    };
    return j;
}

std::map<std::string, std::string> export_metadata(const ClientExport& ex) {
    return {{"format", "pt"},
            {"h2tune_run", fs::absolute(ex.run_dir).lexically_normal().string()},
            {"h2tune_client", std::to_string(ex.client)},
            {"h2tune_method", ex.method},
            {"h2tune_alpha", std::to_string(ex.alpha)}};
}

void export_adapter(const ClientExport& ex, const fs::path& out) {
    const std::string base_model = fs::absolute(ex.paths.model_dir).lexically_normal().string();
    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : ex.projections) {
        tensors[kPeftKeyPrefix + p.name + ".lora_A.weight"] = p.lora_A;
        tensors[kPeftKeyPrefix + p.name + ".lora_B.weight"] = p.lora_B;
    }
    safetensors_save((out / "adapter_model.safetensors").string(), tensors, export_metadata(ex));
    write_text_atomically((out / "adapter_config.json").string(), peft_adapter_config(ex, base_model).dump(2) + "\n");
    std::printf("export: client %d (%s, method %s, r = %lld, lora_alpha = r: the scale %g / %lld is in lora_B, "
                "modules", ex.client, ex.paths.model_dir.c_str(), ex.method.c_str(), static_cast<long long>(ex.rank),
                ex.alpha, static_cast<long long>(ex.rank));
    for (const auto& m : ex.modules) std::printf(" %s", m.c_str());
    std::printf(") -> PEFT adapter %s\n", out.string().c_str());
}

// FLoRA's W0 at the end of the run: the client's base weights in the last committed checkpoint
// (base/<i> in adapter order; client_runtime.cpp writes them).
std::vector<torch::Tensor> flora_final_base(const ClientExport& ex) {
    const std::string root = (fs::path(ex.run_dir) / "checkpoints").string();
    for (const CheckpointInfo& info : list_checkpoints(root)) {
        const std::string why = verify_checkpoint(info);
        if (!why.empty()) {
            std::printf("export: skipping checkpoint %s: %s\n", info.dir.c_str(), why.c_str());
            continue;
        }
        if (info.in_progress)
            throw ModelError(info.dir + ": the run stopped inside round " + std::to_string(info.next_round + 1) +
                             "; finish it with 'h2tune train --resume " + ex.run_dir + "' before exporting");
        const std::string file = (fs::path(info.dir) / client_file_name(ex.client)).string();
        const TensorMap state = read_tensor_file(file);
        std::vector<torch::Tensor> base;
        for (size_t i = 0; i < ex.projections.size(); ++i) {
            const auto it = state.find("base/" + std::to_string(i));
            if (it == state.end())
                throw ModelError(file + ": no 'base/" + std::to_string(i) + "' tensor (FLoRA's merged W0 of " +
                                 ex.projections[i].name + ")");
            base.push_back(it->second);
        }
        return base;
    }
    throw ModelError(root + ": no committed checkpoint; a FLoRA run's merged base weights live only there");
}

void export_merged(const ClientExport& ex, const fs::path& out) {
    const fs::path base_dir = ex.paths.model_dir;
    const BaseCheckpoint base = find_base_checkpoint(base_dir);
    check_against_base(ex, base);
    std::vector<torch::Tensor> flora_base;
    if (ex.merges_into_base) flora_base = flora_final_base(ex);

    std::map<std::string, size_t> index_of;
    for (size_t i = 0; i < ex.projections.size(); ++i) index_of[ex.projections[i].name + ".weight"] = i;
    size_t merged = 0;
    std::string dtype_name;
    for (const auto& file : base.files) {
        std::map<std::string, std::string> metadata;
        auto tensors = safetensors_load((base_dir / file).string(), &metadata);
        for (auto& [name, w] : tensors) {
            const auto it = index_of.find(name);
            if (it == index_of.end()) continue;
            const AdaptedProjection& p = ex.projections[it->second];
            const torch::Tensor& w0 = flora_base.empty() ? w : flora_base[it->second];
            if (!w0.sizes().equals(w.sizes()))
                throw ModelError("FLoRA base weight of " + p.name + " has shape " + shape_string(w0.sizes()) +
                                 " but " + (base_dir / file).string() + " holds " + shape_string(w.sizes()));
            w = merge_lora_weight(w0, p.lora_A, p.lora_B, w.scalar_type());
            dtype_name = safetensors_dtype_name(w.scalar_type());
            ++merged;
        }
        metadata["format"] = "pt";  // transformers refuses safetensors files without it
        safetensors_save((out / file).string(), tensors, metadata);
    }
    if (merged != ex.projections.size())
        throw ModelError(base_dir.string() + ": holds " + std::to_string(merged) + " of the " +
                         std::to_string(ex.projections.size()) + " weights the adapter applies to");
    if (!base.index.empty()) copy_file_atomically((base_dir / base.index).string(), (out / base.index).string());
    copy_file_atomically(ex.paths.tokenizer, (out / "tokenizer.json").string());
    for (const auto& f : companion_files())
        if (fs::exists(base_dir / f)) copy_file_atomically((base_dir / f).string(), (out / f).string());
    // Written last: a directory whose export was interrupted has no config.json and never loads.
    copy_file_atomically((base_dir / "config.json").string(), (out / "config.json").string());
    std::printf("export: client %d (%s, method %s, r = %lld) -> merged model %s (%zu weights W0 + B A in %s%s)\n",
                ex.client, ex.paths.model_dir.c_str(), ex.method.c_str(), static_cast<long long>(ex.rank),
                out.string().c_str(), merged, dtype_name.c_str(),
                ex.merges_into_base ? ", W0 = FLoRA's merged base from the last checkpoint" : "");
}

}  // namespace

int cmd_export(const Args& args) {
    po::options_description desc("export options");
    desc.add_options()
        ("run", po::value<std::string>()->required(), "output directory of 'h2tune train' (job.ini, adapters/)")
        ("client", po::value<int>()->required(), "client index K (adapters/client_K.safetensors)")
        ("out", po::value<std::string>()->required(), "directory to write (created; its files are replaced)")
        ("merged", po::bool_switch(), "write a full model directory with the adapter merged into the weights "
                                      "instead of a PEFT adapter directory");
    po::variables_map vm;
    if (!parse_command_options("export", "--run DIR --client K --out DIR [--merged]", desc, args, vm)) return kExitOk;
    const ClientExport ex = load_client_export(vm["run"].as<std::string>(), vm["client"].as<int>());

    const bool merged = vm["merged"].as<bool>();
    if (!merged && ex.merges_into_base)
        throw ConfigError("export: the run in " + ex.run_dir + " used method 'flora', which merges the aggregated "
                          "adapters into W0 every round, so client " + std::to_string(ex.client) +
                          "'s adapter applies to that merged base, not to " + ex.paths.model_dir +
                          "; export it with --merged");

    const fs::path out = vm["out"].as<std::string>();
    std::error_code ec;
    if (fs::exists(out) && fs::equivalent(out, ex.paths.model_dir, ec))
        throw ConfigError("--out " + out.string() + ": is the client's base model directory; choose another");
    fs::create_directories(out, ec);
    if (ec) throw IoError("--out " + out.string() + ": cannot create directory: " + ec.message());
    if (merged) {
        export_merged(ex, out);
    } else {
        check_against_base(ex, find_base_checkpoint(ex.paths.model_dir));
        export_adapter(ex, out);
    }
    return kExitOk;
}

}  // namespace h2tune
