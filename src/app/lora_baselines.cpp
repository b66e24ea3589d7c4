#include "h2tune/app/lora_baselines.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "h2tune/core/error.h"
#include "h2tune/method/baselines.h"

namespace h2tune {

bool is_lora_baseline(const std::string& m) {
    return m == "fedit" || m == "ffa" || m == "fedsa" || m == "hetlora" || m == "flexlora" || m == "flora";
}

LoraExchange lora_exchange(const std::string& m) {
    LoraExchange e;
    if (m == "fedit" || m == "hetlora" || m == "flexlora" || m == "flora") e.upload_A = e.upload_B = true;
    else if (m == "ffa") e.upload_B = e.freeze_A = true;
    else if (m == "fedsa") e.upload_A = true;
    else throw ConfigError("run.method = '" + m + "' is not a LoRA baseline");
    e.merge = m == "flora";
    return e;
}

std::string lora_group_signature(const LlamaConfig& c, const std::vector<std::string>& modules, int64_t rank,
                                 const std::string& method) {
    std::ostringstream s;
    s << "h" << c.hidden_size << "-i" << c.intermediate_size << "-l" << c.num_hidden_layers << "-a"
      << c.num_attention_heads << "-kv" << c.num_key_value_heads << "-v" << c.vocab_size;
    // An explicit head_dim changes q/k/v/o shapes, and another family is another architecture
    // even at equal shapes; both are written only when present, so that signatures (and the
    // adapter seeds hashed from them) of the built-in Llama-style models stay what they were.
    if (c.head_dim() * c.num_attention_heads != c.hidden_size) s << "-d" << c.head_dim();
    if (c.model_type != "llama") s << "-" << c.model_type;
    s << "-m";
    for (const auto& m : modules) s << m << ",";
    if (method == "fedit" || method == "ffa" || method == "fedsa") s << "-r" << rank;
    return s.str();
}

void put_tensor_map(ByteWriter& w, const TensorMap& tensors) {
    w.put<uint32_t>(static_cast<uint32_t>(tensors.size()));
    for (const auto& [name, t] : tensors) {
        w.put_string(name);
        torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
        w.put<uint8_t>(static_cast<uint8_t>(c.dim()));
        for (int64_t d = 0; d < c.dim(); ++d) w.put<int64_t>(c.size(d));
        w.put_array(c.data_ptr<float>(), static_cast<size_t>(c.numel()));
    }
}

TensorMap get_tensor_map(ByteReader& r) {
    TensorMap out;
    const uint32_t n = r.get<uint32_t>();
    if (n > 100000) throw DataError("tensor map of " + std::to_string(n) + " tensors");
    for (uint32_t i = 0; i < n; ++i) {
        const std::string name = r.get_string();
        const int dims = r.get<uint8_t>();
        if (dims > 4) throw DataError("tensor '" + name + "' has " + std::to_string(dims) + " dimensions");
        std::vector<int64_t> shape(static_cast<size_t>(dims));
        size_t count = 1;
        for (auto& d : shape) {
            d = r.get<int64_t>();
            if (d < 0 || d > (int64_t{1} << 31)) throw DataError("tensor '" + name + "' has a bad dimension");
            count *= static_cast<size_t>(d);
        }
        auto values = r.get_array<float>(count);
        if (values.size() != count) throw DataError("tensor '" + name + "' has the wrong number of values");
        out[name] = torch::from_blob(values.data(), shape, torch::kFloat32).clone();
    }
    return out;
}

void LoraServer::configure(const std::string& m, const std::vector<std::string>& signatures,
                           std::vector<std::map<std::string, std::vector<int64_t>>> factor_shapes,
                           std::vector<double> scales) {
    method = m;
    exchange = lora_exchange(m);
    shapes = std::move(factor_shapes);
    scale = std::move(scales);
    const size_t K = signatures.size();
    group.assign(K, -1);
    members.clear();
    pending.assign(K, TensorMap{});
    std::map<std::string, std::vector<int>> by_signature;
    for (size_t k = 0; k < K; ++k) by_signature[signatures[k]].push_back(static_cast<int>(k));
    // Groups numbered by their lowest client id, so the numbering does not depend on signatures.
    std::vector<std::vector<int>> groups;
    for (auto& [sig, ids] : by_signature)
        if (ids.size() > 1) groups.push_back(ids);
    std::sort(groups.begin(), groups.end());
    for (size_t g = 0; g < groups.size(); ++g) {
        for (int k : groups[g]) group[static_cast<size_t>(k)] = static_cast<int>(g);
        members.push_back(groups[g]);
    }
}

std::string LoraServer::describe() const {
    std::ostringstream s;
    for (size_t g = 0; g < members.size(); ++g) {
        s << "  group " << g << ": clients";
        for (int k : members[g]) s << " " << k;
        s << " aggregate with " << method << "\n";
    }
    std::vector<int> alone;
    for (size_t k = 0; k < group.size(); ++k)
        if (group[k] < 0) alone.push_back(static_cast<int>(k));
    if (!alone.empty()) {
        s << "  alone (no other client shares the architecture" << (method == "fedit" || method == "ffa" || method == "fedsa" ? " and rank" : "")
          << "; trains locally):";
        for (int k : alone) s << " " << k;
        s << "\n";
    }
    return s.str();
}

std::string LoraServer::validate(const LoraUpload& u) const {
    const auto& want = shapes.at(static_cast<size_t>(u.client));
    if (!(u.samples > 0) || !std::isfinite(u.samples)) return "sample count must be positive";
    size_t expected = 0;
    for (const auto& [name, shape] : want) {
        const bool is_A = name.compare(0, 2, "A/") == 0;
        if ((is_A && !exchange.upload_A) || (!is_A && !exchange.upload_B)) continue;
        ++expected;
        auto it = u.factors.find(name);
        if (it == u.factors.end()) return "missing factor " + name;
        if (!it->second.sizes().equals(shape)) return "factor " + name + " has the wrong shape";
        if (!torch::isfinite(it->second).all().item<bool>()) return "factor " + name + " contains NaN or Inf";
    }
    if (u.factors.size() != expected) return "unexpected factors in the upload";
    return "";
}

void LoraServer::aggregate(const std::vector<const LoraUpload*>& accepted) {
    for (size_t g = 0; g < members.size(); ++g) {
        std::vector<const LoraUpload*> in;
        for (const LoraUpload* u : accepted)
            if (group[static_cast<size_t>(u->client)] == static_cast<int>(g)) in.push_back(u);
        if (in.empty()) continue;
        std::sort(in.begin(), in.end(), [](const LoraUpload* a, const LoraUpload* b) { return a->client < b->client; });
        const auto& names = shapes[static_cast<size_t>(in.front()->client)];
        for (const auto& [name, shape] : names) {
            if (name.compare(0, 2, "A/") != 0) continue;
            const std::string i = name.substr(2);
            std::vector<LoraFactors> f;
            for (const LoraUpload* u : in) {
                LoraFactors x;
                const auto& sh = shapes[static_cast<size_t>(u->client)];
                // A factor a method does not send is a placeholder of the right shape: FFA's A is
                // the group's shared initialisation, FedSA's B never leaves the client.
                x.A = exchange.upload_A ? u->factors.at("A/" + i) : torch::zeros(sh.at("A/" + i));
                x.B = exchange.upload_B ? u->factors.at("B/" + i) : torch::zeros(sh.at("B/" + i));
                x.samples = u->samples;
                x.scale = scale[static_cast<size_t>(u->client)];
                x.client = u->client;
                f.push_back(x);
            }
            if (method == "flora") {
                const FloraStack stack = flora_stack(f);
                for (int k : members[g]) {
                    // A client that misses rounds gets every stack it missed: concatenated stacks
                    // merge to the sum of their products.
                    TensorMap& p = pending[static_cast<size_t>(k)];
                    auto a = p.find("stackA/" + i);
                    if (a == p.end()) {
                        p["stackA/" + i] = stack.A.clone();
                        p["stackB/" + i] = stack.B.clone();
                    } else {
                        a->second = torch::cat({a->second, stack.A}, 0);
                        p["stackB/" + i] = torch::cat({p["stackB/" + i], stack.B}, 1);
                    }
                }
                continue;
            }
            // Every member, participant or not, is given the group's new state. FlexLoRA and
            // HetLoRA shape it to the member's rank, so members absent this round are included
            // as ranks: their results are computed from the participants alone.
            std::vector<int> targets;
            for (const LoraUpload* u : in) targets.push_back(u->client);
            std::vector<LoraFactors> out;
            if (method == "fedit") out = aggregate_fedit(f);
            else if (method == "ffa") out = aggregate_ffa(f);
            else if (method == "fedsa") out = aggregate_fedsa(f);
            else if (method == "hetlora") out = aggregate_hetlora(f);
            else if (method == "flexlora") out = aggregate_flexlora(f);
            else throw Error("LoRA baseline '" + method + "' has no aggregation rule");
            for (size_t j = 0; j < out.size(); ++j) {
                TensorMap& p = pending[static_cast<size_t>(targets[j])];
                if (exchange.upload_A) p["A/" + i] = out[j].A;
                if (exchange.upload_B) p["B/" + i] = out[j].B;
            }
            // Members that sat the round out: same-rank rules give them the common result; the
            // rank-shaping rules give them the result of a participant of the same rank, if any.
            for (int k : members[g]) {
                if (std::find(targets.begin(), targets.end(), k) != targets.end()) continue;
                const auto& sh = shapes[static_cast<size_t>(k)];
                for (size_t j = 0; j < out.size(); ++j) {
                    if (!sh.at("A/" + i).empty() && out[j].A.size(0) == sh.at("A/" + i)[0]) {
                        TensorMap& p = pending[static_cast<size_t>(k)];
                        if (exchange.upload_A) p["A/" + i] = out[j].A.clone();
                        if (exchange.upload_B && method != "fedsa") p["B/" + i] = out[j].B.clone();
                        break;
                    }
                }
            }
        }
    }
}

TensorMap LoraServer::state() const {
    TensorMap out;
    for (size_t k = 0; k < pending.size(); ++k)
        for (const auto& [name, t] : pending[k]) out["pending/" + std::to_string(k) + "/" + name] = t;
    return out;
}

void LoraServer::load_state(const TensorMap& state) {
    for (auto& p : pending) p.clear();
    for (const auto& [key, t] : state) {
        if (key.compare(0, 8, "pending/") != 0) continue;
        const auto slash = key.find('/', 8);
        const size_t k = static_cast<size_t>(std::stoul(key.substr(8, slash - 8)));
        if (k >= pending.size()) throw ModelError("LoRA server state for unknown client " + std::to_string(k));
        pending[k][key.substr(slash + 1)] = t.to(torch::kFloat32);
    }
}

}  // namespace h2tune
