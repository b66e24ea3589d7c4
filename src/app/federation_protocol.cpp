#include "h2tune/app/federation_protocol.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>

#include "h2tune/core/error.h"
#include "h2tune/core/rng.h"
#include "h2tune/method/alignment.h"
#include "h2tune/method/mask_refresh.h"
#include "h2tune/model/llama_config.h"

namespace fs = std::filesystem;

namespace h2tune {

namespace {

constexpr int kTagDownload = 41;

enum Column { kTrainLoss, kAccuracy, kAccuracyGenerate, kTokens, kBytesUp, kBytesDown, kMaskDensity,
              kTrainSeconds, kEvalSeconds, kExcluded, kParticipated, kMaskChanged, kColumns };

void put_tensor_f32(ByteWriter& w, const torch::Tensor& t) {
    torch::Tensor c = t.to(torch::kCPU, torch::kFloat32).contiguous();
    w.put_array(c.data_ptr<float>(), static_cast<size_t>(c.numel()));
}


size_t element_count(const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (auto d : shape) n *= static_cast<size_t>(d);
    return n;
}

torch::Tensor get_tensor_f32(ByteReader& r, std::vector<int64_t> shape) {
    auto v = r.get_array<float>(element_count(shape));
    return torch::from_blob(v.data(), shape, torch::kFloat32).clone();
}

// Mask indices travel down as int32 (R*R stays far below 2^31).
void put_mask_i32(ByteWriter& w, const torch::Tensor& mask) {
    torch::Tensor c = mask.to(torch::kInt32).contiguous();
    w.put_array(c.data_ptr<int32_t>(), static_cast<size_t>(c.numel()));
}

torch::Tensor get_mask_i32(ByteReader& r, std::vector<int64_t> shape) {
    auto v = r.get_array<int32_t>(element_count(shape));
    return torch::from_blob(v.data(), shape, torch::kInt32).to(torch::kInt64);
}

// Round-start delivery from rank 0: one message per rank holding a record ([client][payload]) for
// each of its clients that `wanted`; `write` fills a payload, `read` consumes one on the hosting
// rank. Posted, not sent: a rank still busy with an earlier round (round_timeout) must not hold
// rank 0 up; it finds its message when it gets here. Returns the bytes each hosted client received.
std::map<int, double> deliver_to_clients(Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                                         size_t num_clients, const char* what,
                                         const std::function<bool(size_t)>& wanted,
                                         const std::function<void(size_t, ByteWriter&)>& write,
                                         const std::function<void(ClientRuntime&, ByteReader&)>& read) {
    Bytes msg;
    if (comm.rank() == 0) {
        std::vector<ByteWriter> per_rank(static_cast<size_t>(comm.size()));
        for (size_t k = 0; k < num_clients; ++k) {
            if (!wanted(k)) continue;
            ByteWriter& w = per_rank[k % static_cast<size_t>(comm.size())];
            w.put<int32_t>(static_cast<int32_t>(k));
            write(k, w);
        }
        for (int r = 1; r < comm.size(); ++r) comm.post(std::move(per_rank[static_cast<size_t>(r)].buffer()), r, kTagDownload);
        msg = std::move(per_rank[0].buffer());  // rank 0's own clients need no MPI
    } else {
        msg = comm.receive(0, kTagDownload);
    }
    std::map<int, double> bytes;
    ByteReader reader(msg.data(), msg.size(), what);
    while (!reader.done()) {
        const size_t begin = reader.position();
        const int32_t k = reader.get<int32_t>();
        auto it = std::find_if(clients.begin(), clients.end(), [k](const auto& c) { return c->config().index == k; });
        if (it == clients.end()) throw CommError(std::string(what) + " for client " + std::to_string(k) + " reached the wrong rank");
        read(**it, reader);
        bytes[k] = static_cast<double>(reader.position() - begin);
    }
    return bytes;
}

// A finite but absurd update (a diverged client) would swamp the bank as surely as a NaN.
std::string exploding(const torch::Tensor& values, double max_abs) {
    if (max_abs <= 0 || values.numel() == 0) return "";
    const double peak = values.abs().max().item<double>();
    if (peak <= max_abs) return "";
    char buf[160];
    std::snprintf(buf, sizeof buf, "values up to %.3g exceed federation.max_abs_value = %.3g", peak, max_abs);
    return buf;
}

bool taylor_due(const FederationConfig& f, int round) {
    return f.mask_score == "taylor" && mask_refresh_due(f, round + 1);
}

}  // namespace

const std::vector<std::string>& client_metric_names() {
    static const std::vector<std::string> names = {
        "train_loss",   "test_accuracy", "test_accuracy_generate", "tokens",   "bytes_up",    "bytes_down",
        "mask_density", "train_seconds", "eval_seconds",           "excluded", "participated", "mask_changed"};
    return names;
}

FaultInjection FaultInjection::from_environment() {
    FaultInjection f;
    const char* spec = std::getenv("H2TUNE_INJECT_FAULT");
    if (!spec || !*spec) return f;
    std::string s = spec;
    auto a = s.find(':'), b = s.find(':', a == std::string::npos ? a : a + 1);
    if (a == std::string::npos || b == std::string::npos)
        throw ConfigError("H2TUNE_INJECT_FAULT: expected KIND:CLIENT:ROUND, got '" + s + "'");
    f.kind = s.substr(0, a);
    f.client = std::stoi(s.substr(a + 1, b - a - 1));
    f.round = std::stoi(s.substr(b + 1));
    if (f.kind != "nan" && f.kind != "explode" && f.kind != "truncate" && f.kind != "rank" && f.kind != "index" &&
        f.kind != "stall")
        throw ConfigError("H2TUNE_INJECT_FAULT: unknown kind '" + f.kind + "'");
    if (f.kind == "stall") f.stall_seconds = std::getenv("H2TUNE_STALL_SECONDS") ? std::atof(std::getenv("H2TUNE_STALL_SECONDS")) : 5.0;
    return f;
}

int64_t resolve_global_layers(const JobConfig& job) {
    if (job.federation.global_layers > 0) return job.federation.global_layers;
    int64_t deepest = 0;
    for (const auto& c : job.clients) {
        const std::string dir = c.model_dir.empty() ? (fs::path("data/models") / c.model).string() : c.model_dir;
        deepest = std::max(deepest, llama_config_load((fs::path(dir) / "config.json").string()).num_hidden_layers);
    }
    return deepest;
}

std::vector<bool> sample_participants(const JobConfig& job, int round) {
    const int64_t K = static_cast<int64_t>(job.clients.size());
    const int64_t take = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(job.federation.participation * K - 1e-9)));
    std::vector<bool> chosen(static_cast<size_t>(K), false);
    auto order = permutation(K, stream_key(job.run.seed, 0x9a47, static_cast<uint64_t>(round)));
    for (int64_t i = 0; i < take; ++i) chosen[static_cast<size_t>(order[static_cast<size_t>(i)])] = true;
    return chosen;
}

bool mask_refresh_due(const FederationConfig& f, int round) {
    return f.mask_refresh > 0 && round > 0 && round % f.mask_refresh == 0;
}

void refresh_masks(FederatedServer& server, const FederationConfig& f, int round, const std::vector<bool>& participating) {
    const size_t K = server.masks.size();
    server.new_masks.assign(K, torch::Tensor());
    server.mask_changed.assign(K, 0.0);
    if (!mask_refresh_due(f, round)) return;
    const int64_t R = server.shape.max_rank;
    for (size_t k = 0; k < K; ++k) {
        // A client never heard from (excluded every round so far) keeps its mask: rank 0 has no Pi_k.
        if (!participating[k] || !server.mask_errors[k].empty() || !server.relations[k].defined()) continue;
        const torch::Tensor& old = server.masks[k];
        const auto rank = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(old.size(1)))));
        torch::Tensor scores = magnitude_mask_scores(server.bank, server.relations[k]);
        if (f.mask_score == "taylor" && server.taylor[k].defined())
            scores = taylor_mask_scores(scores, old, server.taylor[k], server.grad_scale[k]);
        std::vector<torch::Tensor> rows;
        for (int64_t m = 0; m < server.shape.modules; ++m) rows.push_back(select_mask(scores[m], rank, R, "topk"));
        torch::Tensor fresh = torch::stack(rows);
        if (torch::equal(fresh, old)) continue;
        // Share of the new entries the old mask already held, through a membership map per module.
        torch::Tensor member = torch::zeros({server.shape.modules, R * R}, torch::kBool);
        member.scatter_(1, old, true);
        const double kept = member.gather(1, fresh).sum().item<double>();
        server.mask_changed[k] = 1.0 - kept / static_cast<double>(fresh.numel());
        server.masks[k] = fresh;
        server.new_masks[k] = fresh;
        server.taylor[k] = torch::Tensor();  // measured on the old positions
        server.grad_scale[k] = torch::Tensor();
    }
}

std::vector<int> configure_lora_groups(Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                                       FederatedServer& server, size_t num_clients, const std::string& method) {
    ByteWriter w;
    for (const auto& c : clients) {
        w.put<int32_t>(c->config().index);
        w.put_string(c->lora_signature());
        w.put<double>(c->lora_scale());
        const auto shapes = c->lora_factor_shapes();
        w.put<uint32_t>(static_cast<uint32_t>(shapes.size()));
        for (const auto& [name, shape] : shapes) {
            w.put_string(name);
            w.put_array(shape.data(), shape.size());
        }
    }
    const auto parts = comm.gather(w.buffer(), 0);
    Bytes groups_msg;
    if (comm.rank() == 0) {
        std::vector<std::string> signatures(num_clients);
        std::vector<std::map<std::string, std::vector<int64_t>>> shapes(num_clients);
        std::vector<double> scales(num_clients, 1.0);
        for (const auto& part : parts) {
            ByteReader r(part.data(), part.size(), "LoRA client description");
            while (!r.done()) {
                const auto k = static_cast<size_t>(r.get<int32_t>());
                if (k >= num_clients) throw CommError("LoRA client description for an unknown client");
                signatures[k] = r.get_string();
                scales[k] = r.get<double>();
                const uint32_t n = r.get<uint32_t>();
                for (uint32_t i = 0; i < n; ++i) {
                    const std::string name = r.get_string();
                    shapes[k][name] = r.get_array<int64_t>();
                }
            }
        }
        server.lora_method = true;
        server.lora.configure(method, signatures, std::move(shapes), std::move(scales));
        std::printf("h2tune train: %s groups (clients aggregate only with the same architecture)\n%s", method.c_str(),
                    server.lora.describe().c_str());
        std::fflush(stdout);
        ByteWriter g;
        g.put_array(server.lora.group.data(), server.lora.group.size());
        groups_msg = std::move(g.buffer());
    }
    comm.broadcast(groups_msg, 0);
    ByteReader r(groups_msg.data(), groups_msg.size(), "LoRA groups");
    std::vector<int> groups = r.get_array<int>(num_clients);
    return groups;
}

std::map<int, double> send_lora_downloads(Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                                          FederatedServer& server, const std::vector<bool>& participating,
                                          size_t num_clients, int round) {
    return deliver_to_clients(
        comm, clients, num_clients, "LoRA download",
        [&](size_t k) { return participating[k] && !server.lora.pending[k].empty(); },
        [&](size_t k, ByteWriter& w) {
            put_tensor_map(w, server.lora.pending[k]);
            server.lora.pending[k].clear();  // delivered; the next aggregation sets it again
        },
        [&](ClientRuntime& c, ByteReader& r) { c.apply_lora_download(get_tensor_map(r), round); });
}

void exchange_masks(const Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                    FederatedServer& server, size_t num_clients, const FaultInjection& fault) {
    ByteWriter w;
    for (const auto& c : clients) {
        torch::Tensor masks = c->shared()->masks().clone();
        if (fault.kind == "index" && fault.client == c->config().index)
            masks[0][masks.size(1) - 1] = server.shape.max_rank * server.shape.max_rank + 5;  // past R*R
        w.put<int32_t>(c->config().index);
        w.put<int64_t>(masks.size(0));
        w.put<int64_t>(masks.size(1));
        put_mask_i32(w, masks);  // indices < R*R: int32 halves the one-time announcement
    }
    auto parts = comm.gather(w.buffer(), 0);
    if (comm.rank() != 0) return;
    server.masks.assign(num_clients, torch::Tensor());
    server.mask_errors.assign(num_clients, "");
    server.mask_bytes.assign(num_clients, 0.0);
    server.relations.assign(num_clients, torch::Tensor());
    server.taylor.assign(num_clients, torch::Tensor());
    server.grad_scale.assign(num_clients, torch::Tensor());
    server.new_masks.assign(num_clients, torch::Tensor());
    server.mask_changed.assign(num_clients, 0.0);
    for (const auto& part : parts) {
        ByteReader r(part.data(), part.size(), "mask announcement");
        while (!r.done()) {
            const size_t begin = r.position();
            const int32_t k = r.get<int32_t>();
            const int64_t M = r.get<int64_t>(), n = r.get<int64_t>();
            if (k < 0 || static_cast<size_t>(k) >= num_clients || M != server.shape.modules || n < 1 ||
                n > server.shape.max_rank * server.shape.max_rank)
                throw CommError("malformed mask announcement");
            torch::Tensor masks = get_mask_i32(r, {M, n});
            server.masks[static_cast<size_t>(k)] = masks;
            server.mask_bytes[static_cast<size_t>(k)] = static_cast<double>(r.position() - begin);
            server.mask_errors[static_cast<size_t>(k)] = validate_mask_indices(masks, server.shape.max_rank);
        }
    }
}

std::map<int, double> send_downloads(Communicator& comm, const std::vector<std::unique_ptr<ClientRuntime>>& clients,
                                     const FederatedServer& server, const std::vector<bool>& participating,
                                     size_t num_clients) {
    return deliver_to_clients(
        comm, clients, num_clients, "download",
        [&](size_t k) { return participating[k] && server.mask_errors[k].empty(); },
        [&](size_t k, ByteWriter& w) {
            const bool new_mask = server.new_masks[k].defined();
            w.put<uint8_t>(new_mask ? 1 : 0);
            if (new_mask) put_mask_i32(w, server.new_masks[k]);
            // h2tune-dense: the whole bank travels, as in the reference implementation.
            put_tensor_f32(w, server.dense ? server.bank : bank_gather(server.bank, server.masks[k]));
        },
        [&](ClientRuntime& c, ByteReader& r) {
            const SharedMiddle* sh = c.shared();
            const auto& o = sh->options();
            if (r.get<uint8_t>() != 0) c.receive_masks(get_mask_i32(r, {o.modules, sh->entries()}));
            if (c.dense_exchange())
                c.receive_dense_bank(get_tensor_f32(r, {o.global_layers, o.modules, o.max_rank * o.max_rank}));
            else
                c.receive_slices(get_tensor_f32(r, {o.global_layers, o.modules, sh->entries()}));
        });
}

void pack_upload(ByteWriter& out, ClientRuntime& client, const ClientRoundMetrics& m, bool participated,
                 bool federated, const FaultInjection& fault, int round, double bytes_down) {
    const int k = client.config().index;
    ByteWriter rec;
    rec.put<int32_t>(k);
    double row[kColumns] = {};
    row[kTrainLoss] = m.train_loss;
    row[kAccuracy] = m.test_accuracy;
    row[kAccuracyGenerate] = m.test_accuracy_generate;
    row[kTokens] = m.tokens;
    row[kBytesDown] = participated ? bytes_down : 0.0;
    row[kTrainSeconds] = m.train_seconds;
    row[kEvalSeconds] = m.eval_seconds;
    row[kParticipated] = participated ? 1.0 : 0.0;
    row[kMaskChanged] = 0.0;  // rank 0 knows; it fills this column
    rec.append(row, sizeof(row));
    const bool sends_values = federated && participated;
    rec.put<uint8_t>(sends_values ? 1 : 0);
    if (sends_values && client.is_lora_baseline()) {
        TensorMap factors = client.lora_factors();
        if (fault.hits(k, round) && fault.kind == "nan" && !factors.empty())
            factors.begin()->second.view({-1})[0] = std::nanf("");
        if (fault.hits(k, round) && fault.kind == "explode")
            for (auto& kv : factors) kv.second.mul_(1e8);
        rec.put<double>(static_cast<double>(client.train_size()));
        put_tensor_map(rec, factors);
    } else if (sends_values) {
        const bool with_taylor = taylor_due(client.federation(), round);
        ClientUploadValues u = client.upload_values(with_taylor);
        if (fault.hits(k, round) && fault.kind == "nan") u.values.view({-1})[0] = std::nanf("");
        if (fault.hits(k, round) && fault.kind == "explode") u.values.mul_(1e8);
        rec.put<double>(u.samples);
        rec.put<int64_t>(fault.hits(k, round) && fault.kind == "rank" ? u.masks.size(1) + 1 : client.shared()->options().rank);
        rec.put<int64_t>(u.relation.size(1));
        put_tensor_f32(rec, u.relation);
        put_tensor_f32(rec, client.dense_exchange() ? client.dense_values(u.values) : u.values);
        rec.put<uint8_t>(with_taylor ? 1 : 0);
        if (with_taylor) {
            put_tensor_f32(rec, u.taylor);
            put_tensor_f32(rec, u.grad_scale);
        }
    }
    Bytes& b = rec.buffer();
    if (fault.hits(k, round) && fault.kind == "truncate") b.resize(b.size() - 7);
    out.put<uint64_t>(b.size());
    out.append(b.data(), b.size());
}

RoundTable receive_uploads(const std::vector<Bytes>& parts, FederatedServer& server, size_t num_clients,
                           bool federated, int round, const std::vector<bool>& late) {
    RoundTable t;
    for (const auto& name : client_metric_names()) t.columns[name].assign(num_clients, 0.0);
    std::vector<ClientUpload> accepted;
    std::vector<LoraUpload> lora_accepted;
    std::vector<bool> seen(num_clients, false);
    const int64_t R2 = server.shape.max_rank * server.shape.max_rank;
    for (size_t rank = 0; rank < parts.size(); ++rank) {
        ByteReader outer(parts[rank].data(), parts[rank].size(), "upload from rank " + std::to_string(rank));
        while (!outer.done()) {
            const std::vector<uint8_t> record = outer.get_array<uint8_t>();
            ByteReader r(record.data(), record.size(), "upload record");
            int32_t k = -1;
            try {
                k = r.get<int32_t>();
                if (k < 0 || static_cast<size_t>(k) >= num_clients || seen[static_cast<size_t>(k)])
                    throw DataError("bad or duplicate client id " + std::to_string(k));
                seen[static_cast<size_t>(k)] = true;
                double row[kColumns];
                for (double& v : row) v = r.get<double>();
                for (size_t c = 0; c < kColumns; ++c) t.columns[client_metric_names()[c]][static_cast<size_t>(k)] = row[c];
                const bool has_values = r.get<uint8_t>() != 0;
                if (!has_values) continue;
                const size_t values_begin = r.position();
                if (server.lora_method) {
                    LoraUpload u;
                    u.client = k;
                    u.samples = r.get<double>();
                    u.factors = get_tensor_map(r);
                    if (!r.done()) throw DataError("trailing bytes in the record");
                    std::string why = server.lora.validate(u);
                    for (const auto& kv : u.factors)
                        if (why.empty()) why = exploding(kv.second, server.max_abs_value);
                    if (!why.empty()) throw DataError(why);
                    t.columns["bytes_up"][static_cast<size_t>(k)] = static_cast<double>(r.position() - values_begin);
                    lora_accepted.push_back(std::move(u));
                    continue;
                }
                if (!server.mask_errors[static_cast<size_t>(k)].empty())
                    throw DataError(server.mask_errors[static_cast<size_t>(k)]);
                ClientUpload u;
                u.client = k;
                u.samples = r.get<double>();
                u.rank = r.get<int64_t>();
                u.layers = r.get<int64_t>();
                u.mask = server.masks[static_cast<size_t>(k)];
                if (u.rank < 1 || u.rank * u.rank != u.mask.size(1))
                    throw DataError("claims rank " + std::to_string(u.rank) + " but announced masks of " +
                                    std::to_string(u.mask.size(1)) + " entries");
                if (u.layers < 1 || u.layers > 4096) throw DataError("implausible layer count " + std::to_string(u.layers));
                u.relation = get_tensor_f32(r, {server.shape.global_layers, u.layers});
                if (server.dense) {
                    // The personalised R x R matrices; only the client's mask entries are its T.
                    torch::Tensor dense = get_tensor_f32(r, {u.layers, server.shape.modules, R2});
                    u.values = dense.gather(2, u.mask.unsqueeze(0).expand({u.layers, -1, -1}).contiguous());
                } else {
                    u.values = get_tensor_f32(r, {u.layers, server.shape.modules, u.rank * u.rank});
                }
                torch::Tensor taylor, grad_scale;
                if (r.get<uint8_t>() != 0) {
                    taylor = get_tensor_f32(r, {server.shape.modules, u.rank * u.rank});
                    grad_scale = get_tensor_f32(r, {server.shape.modules});
                    if (!torch::isfinite(taylor).all().item<bool>() || !torch::isfinite(grad_scale).all().item<bool>() ||
                        (taylor < 0).any().item<bool>() || (grad_scale < 0).any().item<bool>())
                        throw DataError("Taylor scores must be finite and non-negative");
                }
                if (!r.done()) throw DataError("trailing bytes in the record");
                std::string why = validate_upload(u, server.shape);
                if (why.empty()) why = exploding(u.values, server.max_abs_value);
                if (!why.empty()) throw DataError(why);
                server.relations[static_cast<size_t>(k)] = u.relation;
                if (taylor.defined()) {
                    server.taylor[static_cast<size_t>(k)] = taylor;
                    server.grad_scale[static_cast<size_t>(k)] = grad_scale;
                }
                double bytes = static_cast<double>(r.position() - values_begin);
                if (round == 0) bytes += server.mask_bytes[static_cast<size_t>(k)];  // masks travel once
                t.columns["bytes_up"][static_cast<size_t>(k)] = bytes;
                t.columns["mask_density"][static_cast<size_t>(k)] =
                    static_cast<double>(u.rank * u.rank) / static_cast<double>(R2);
                accepted.push_back(std::move(u));
            } catch (const DataError& e) {
                if (k < 0 || static_cast<size_t>(k) >= num_clients) throw CommError(std::string("unusable upload: ") + e.what());
                t.columns["excluded"][static_cast<size_t>(k)] = 1.0;
                t.columns["bytes_up"][static_cast<size_t>(k)] = static_cast<double>(record.size());
                t.exclusions.push_back("client " + std::to_string(k) + ": " + e.what());
            }
        }
    }
    for (size_t k = 0; k < num_clients; ++k) {
        if (seen[k]) continue;
        if (k >= late.size() || !late[k]) throw CommError("no upload record for client " + std::to_string(k));
        // Its rank missed the round's deadline: the round goes on without it.
        t.columns["participated"][k] = 1.0;
        t.columns["excluded"][k] = 1.0;
        t.columns["test_accuracy"][k] = t.columns["test_accuracy_generate"][k] = std::nan("");
        t.columns["train_loss"][k] = std::nan("");
        t.exclusions.push_back("client " + std::to_string(k) + ": no upload within round_timeout");
    }
    if (federated && !server.lora_method)
        for (size_t k = 0; k < num_clients && k < server.mask_changed.size(); ++k)
            t.columns["mask_changed"][k] = server.mask_changed[k];
    if (federated && server.lora_method) {
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<const LoraUpload*> ptrs;
        for (const auto& u : lora_accepted) ptrs.push_back(&u);
        server.lora.aggregate(ptrs);
        t.aggregate_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } else if (federated) {
        const auto t0 = std::chrono::steady_clock::now();
        std::sort(accepted.begin(), accepted.end(), [](const ClientUpload& a, const ClientUpload& b) { return a.client < b.client; });
        std::vector<const ClientUpload*> ptrs;
        for (const auto& u : accepted) ptrs.push_back(&u);
        aggregate_sparse(server.bank, ptrs);
        t.aggregate_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    return t;
}

}  // namespace h2tune
