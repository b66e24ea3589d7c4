#include "h2tune/app/checkpoint.h"

#include <torch/torch.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

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
        for (const char* name : {"config", "kind"})
            if (f.has_attribute("/", name)) (*attributes)[name] = f.string_attribute("/", name);
    return out;
}

TensorMap server_state(const FederatedServer& s) {
    if (s.lora_method) return s.lora.state();
    TensorMap out;
    out["bank"] = s.bank;
    for (size_t k = 0; k < s.masks.size(); ++k) {
        const std::string n = std::to_string(k);
        if (s.masks[k].defined()) out["masks/" + n] = s.masks[k];
        if (s.relations[k].defined()) out["relations/" + n] = s.relations[k];
        if (s.taylor[k].defined()) out["taylor/" + n] = s.taylor[k];
        if (s.grad_scale[k].defined()) out["grad_scale/" + n] = s.grad_scale[k];
    }
    out["mask_changed"] = torch::tensor(s.mask_changed, torch::kFloat64);
    out["mask_bytes"] = torch::tensor(s.mask_bytes, torch::kFloat64);
    return out;
}

void load_server_state(FederatedServer& s, const TensorMap& state, size_t K) {
    if (s.lora_method) {
        s.lora.load_state(state);
        return;
    }
    auto get = [&](const std::string& key) {
        auto it = state.find(key);
        return it == state.end() ? torch::Tensor() : it->second;
    };
    torch::Tensor bank = get("bank");
    if (!bank.defined() || !bank.sizes().equals(s.bank.sizes()))
        throw ModelError("server state: the bank is missing or has the wrong shape");
    s.bank = bank.to(torch::kFloat32);
    s.relations.assign(K, torch::Tensor());
    s.taylor.assign(K, torch::Tensor());
    s.grad_scale.assign(K, torch::Tensor());
    s.new_masks.assign(K, torch::Tensor());
    for (size_t k = 0; k < K; ++k) {
        const std::string n = std::to_string(k);
        torch::Tensor m = get("masks/" + n);
        if (!m.defined()) throw ModelError("server state: no masks for client " + n);
        s.masks[k] = m.to(torch::kInt64);
        s.mask_errors[k] = validate_mask_indices(s.masks[k], s.shape.max_rank);
        s.relations[k] = get("relations/" + n);
        s.taylor[k] = get("taylor/" + n);
        s.grad_scale[k] = get("grad_scale/" + n);
    }
    auto column = [&](const std::string& key) {
        torch::Tensor t = get(key);
        if (!t.defined() || t.numel() != static_cast<int64_t>(K)) throw ModelError("server state: bad '" + key + "'");
        t = t.to(torch::kFloat64).contiguous();
        return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + K);
    };
    s.mask_changed = column("mask_changed");
    s.mask_bytes = column("mask_bytes");
}

std::string client_file_name(int client) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "client_%04d.h5", client);
    return buf;
}

std::string write_checkpoint(Communicator& comm, const CheckpointRequest& req,
                             const std::vector<std::unique_ptr<ClientRuntime>>& clients, const FederatedServer* server) {
    const fs::path dir = fs::path(req.root) / checkpoint_name(req.next_round, req.in_progress);
    // Rank 0 clears a stale directory of the same name (an uncommitted earlier attempt) first.
    if (comm.rank() == 0) {
        std::error_code ec;
        fs::remove_all(dir, ec);
        fs::create_directories(dir);
    }
    comm.barrier();
    ByteWriter mine;
    for (const auto& c : clients) {
        const std::string name = client_file_name(c->config().index);
        write_tensor_file((dir / name).string(), c->state(), {{"kind", "client"}});
        const CheckpointFile f = describe_file(dir.string(), name);
        mine.put_string(f.name);
        mine.put<uint64_t>(f.size);
        mine.put<uint64_t>(f.checksum);
    }
    CheckpointInfo info;
    info.dir = dir.string();
    info.next_round = req.next_round;
    info.in_progress = req.in_progress;
    if (comm.rank() == 0) {
        write_tensor_file((dir / kServerFile).string(), server ? server_state(*server) : TensorMap{},
                          {{"kind", "server"}, {"config", req.config_text}});
        info.files.push_back(describe_file(dir.string(), kServerFile));
        copy_file_atomically(req.metrics_path, (dir / kMetricsCopy).string());
        info.files.push_back(describe_file(dir.string(), kMetricsCopy));
    }
    // The gather is the barrier: COMMIT is written only after every rank has published its files.
    const auto parts = comm.gather(mine.buffer(), 0);
    if (comm.rank() == 0) {
        for (const auto& part : parts) {
            ByteReader r(part.data(), part.size(), "checkpoint file list");
            while (!r.done()) {
                CheckpointFile f;
                f.name = r.get_string();
                f.size = r.get<uint64_t>();
                f.checksum = r.get<uint64_t>();
                info.files.push_back(f);
            }
        }
        if (const char* fault = std::getenv("H2TUNE_KILL_BEFORE_COMMIT"))
            if (std::to_string(req.next_round) == fault) std::raise(SIGKILL);  // test hook: die mid-checkpoint
        write_commit(info);
        prune_checkpoints(req.root, req.keep);
    }
    comm.barrier();
    return dir.string();
}

CheckpointInfo choose_checkpoint(Communicator& comm, const std::string& root) {
    ByteWriter w;
    if (comm.rank() == 0) {
        const auto all = list_checkpoints(root);
        const CheckpointInfo* chosen = nullptr;
        for (const auto& c : all) {
            const std::string why = verify_checkpoint(c);
            if (why.empty()) {
                chosen = &c;
                break;
            }
            std::printf("h2tune train: skipping checkpoint %s: %s\n", c.dir.c_str(), why.c_str());
        }
        if (!chosen) {
            w.put<uint8_t>(0);
        } else {
            w.put<uint8_t>(1);
            w.put_string(chosen->dir);
            w.put<int64_t>(chosen->next_round);
            w.put<uint8_t>(chosen->in_progress ? 1 : 0);
        }
        std::fflush(stdout);
    }
    Bytes msg = w.buffer();
    comm.broadcast(msg, 0);
    ByteReader r(msg.data(), msg.size(), "checkpoint choice");
    if (r.get<uint8_t>() == 0)
        throw ConfigError(root + ": no committed checkpoint to resume from (none written yet, or all failed "
                          "verification)");
    CheckpointInfo info;
    info.dir = r.get_string();
    info.next_round = r.get<int64_t>();
    info.in_progress = r.get<uint8_t>() != 0;
    return info;
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
