#include "h2tune/app/checkpoint.h"

#include <torch/torch.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include "h2tune/app/round_messages.h"
#include "h2tune/core/error.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/wire.h"
#include "h2tune/io/hdf5_file.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {

struct DtypeInfo {
    torch::ScalarType scalar;
    H5Type h5;
    const char* name;
};
const DtypeInfo kDtypes[] = {{torch::kFloat32, H5Type::Float32, "float32"},
                             {torch::kFloat64, H5Type::Float64, "float64"},
                             {torch::kInt64, H5Type::Int64, "int64"},
                             {torch::kUInt8, H5Type::UInt8, "uint8"}};

const DtypeInfo& dtype_of(torch::ScalarType t, const std::string& key) {
    for (const auto& d : kDtypes)
        if (d.scalar == t) return d;
    throw IoError("checkpoint: tensor '" + key + "' has a dtype checkpoints do not store");
}

const DtypeInfo& dtype_named(const std::string& name, const std::string& where) {
    for (const auto& d : kDtypes)
        if (name == d.name) return d;
    throw IoError(where + ": unknown dtype '" + name + "' in /index");
}

}  // namespace

void write_tensor_file(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& attributes) {
    const std::string tmp = path + ".tmp";
    {
        Hdf5File f(tmp, Hdf5File::Mode::Create);
        std::string index;
        for (const auto& [key, value] : tensors) {
            if (!value.defined()) continue;
            const DtypeInfo& d = dtype_of(value.scalar_type(), key);
            torch::Tensor c = value.detach().cpu().contiguous();
            std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
            if (shape.empty()) shape = {1};
            f.write_array("/state/" + key, d.h5, shape, c.data_ptr());
            index += key + " " + d.name + "\n";
        }
        f.write_string("/index", index);
        for (const auto& [name, value] : attributes) f.set_attribute("/", name, value);
        f.flush();
    }
    publish_file(tmp, path);
}

TensorMap read_tensor_file(const std::string& path, std::map<std::string, std::string>* attributes) {
    Hdf5File f(path, Hdf5File::Mode::ReadOnly);
    TensorMap out;
    std::istringstream index(f.read_string("/index"));
    std::string key, dtype;
    while (index >> key >> dtype) {
        const DtypeInfo& d = dtype_named(dtype, path);
        const std::vector<int64_t> shape = f.dataset_shape("/state/" + key);
        torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(d.scalar));
        f.read_array("/state/" + key, d.h5, t.data_ptr(), static_cast<size_t>(t.numel()));
        out[key] = t;
    }
    if (attributes)
        for (const char* name : {"config", "kind", "base_model"})
            if (f.has_attribute("/", name)) (*attributes)[name] = f.string_attribute("/", name);
    return out;
}

std::string client_file_name(int client) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "client_%04d.h5", client);
    return buf;
}

std::string write_checkpoint(Communicator& comm, const CheckpointRequest& req,
                             const std::vector<std::unique_ptr<ClientRuntime>>& clients, const FederationServer* server) {
    const fs::path dir = fs::path(req.root) / checkpoint_name(req.next_round, req.in_progress);
    // Rank 0 clears a stale directory of the same name (an uncommitted earlier attempt) first.
    if (comm.rank() == 0) {
        std::error_code ec;
        fs::remove_all(dir, ec);
        fs::create_directories(dir);
    }
    comm.barrier();
    std::vector<CheckpointFile> mine;
    for (const auto& c : clients) {
        const std::string name = client_file_name(c->config().index);
        write_tensor_file((dir / name).string(), c->state(),
                          {{"kind", "client"}, {"base_model", c->base_model_fingerprint()}});
        mine.push_back(describe_file(dir.string(), name));
    }
    CheckpointInfo info;
    info.dir = dir.string();
    info.next_round = req.next_round;
    info.in_progress = req.in_progress;
    if (comm.rank() == 0) {
        write_tensor_file((dir / kServerFile).string(), server ? server->state() : TensorMap{},
                          {{"kind", "server"}, {"config", req.config_text}});
        info.files.push_back(describe_file(dir.string(), kServerFile));
        copy_file_atomically(req.metrics_path, (dir / kMetricsCopy).string());
        info.files.push_back(describe_file(dir.string(), kMetricsCopy));
    }
    // The gather is the barrier: COMMIT is written only after every rank has published its files.
    const auto parts = comm.gather(encode_checkpoint_files(mine), 0);
    if (comm.rank() == 0) {
        for (size_t r = 0; r < parts.size(); ++r)
            for (auto& f : decode_checkpoint_files(parts[r], "rank " + std::to_string(r))) info.files.push_back(std::move(f));
        if (const char* fault = std::getenv("H2TUNE_KILL_BEFORE_COMMIT"))
            if (std::to_string(req.next_round) == fault) std::raise(SIGKILL);  // test hook: die mid-checkpoint
        write_commit(info);
        prune_checkpoints(req.root, req.keep);
    }
    comm.barrier();
    return dir.string();
}

namespace {
// Beyond the files' checksums: the metrics copy must hold exactly the rounds before the one COMMIT
// names (an edited or foreign COMMIT would otherwise replay rounds or skip them).
std::string check_commit_round(const CheckpointInfo& c) {
    const std::string metrics = (fs::path(c.dir) / kMetricsCopy).string();
    if (!fs::exists(metrics)) return "";  // verify_checkpoint has already required every listed file
    try {
        const int64_t rows = Hdf5File(metrics, Hdf5File::Mode::ReadOnly).table_rows("/metrics/test_accuracy");
        if (rows != c.next_round)
            return "COMMIT names next_round " + std::to_string(c.next_round) + " but its metrics.h5 holds " +
                   std::to_string(rows) + " rounds";
    } catch (const IoError& e) {
        return std::string("its metrics.h5 cannot be read: ") + e.what();
    }
    return "";
}
}  // namespace

CheckpointInfo choose_checkpoint(Communicator& comm, const std::string& root) {
    CheckpointChoice choice;
    std::string newest_rejection;  // rank 0: why the newest checkpoint was skipped
    if (comm.rank() == 0) {
        std::vector<std::string> unreadable;
        for (const auto& c : list_checkpoints(root, &unreadable)) {
            std::string why = verify_checkpoint(c);
            if (why.empty()) why = check_commit_round(c);
            if (why.empty()) {
                choice.found = true;
                choice.info = c;
                break;
            }
            std::printf("h2tune train: skipping checkpoint %s: %s\n", c.dir.c_str(), why.c_str());
            if (newest_rejection.empty()) newest_rejection = fs::path(c.dir).filename().string() + ": " + why;
        }
        if (!choice.found && newest_rejection.empty() && !unreadable.empty()) newest_rejection = unreadable.front();
        std::fflush(stdout);
    }
    Bytes message = encode_checkpoint_choice(choice);
    comm.broadcast(message, 0);
    choice = decode_checkpoint_choice(message);
    if (!choice.found)
        throw ConfigError(root + ": no committed checkpoint to resume from " +
                          (newest_rejection.empty() ? std::string("(none written yet)")
                                                    : "(all failed verification; the newest, " + newest_rejection + ")"));
    return choice.info;
}

std::vector<std::string> incompatible_keys(const std::string& saved_ini, const std::string& current_ini) {
    static const std::set<std::string> may_change = {"run.output", "run.rounds", "run.threads", "run.name",
                                                     "federation.checkpoint_every", "federation.keep_checkpoints"};
    const auto a = parse_job_config(saved_ini, "checkpoint").resolved;
    const auto b = parse_job_config(current_ini, "job").resolved;
    std::vector<std::string> out;
    std::set<std::string> keys;
    for (const auto& kv : a) keys.insert(kv.first);
    for (const auto& kv : b) keys.insert(kv.first);
    for (const auto& key : keys) {
        if (may_change.count(key)) continue;
        auto ia = a.find(key), ib = b.find(key);
        const std::string va = ia == a.end() ? "(unset)" : ia->second, vb = ib == b.end() ? "(unset)" : ib->second;
        if (va != vb) out.push_back(key + " (checkpoint: " + va + ", now: " + vb + ")");
    }
    return out;
}

}  // namespace h2tune
