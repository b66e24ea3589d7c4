#include "h2tune/method/lora_server.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "h2tune/core/error.h"
#include "h2tune/method/baselines.h"
#include "h2tune/method/sparse_bank.h"

namespace h2tune {

namespace {

using Rule = std::vector<LoraFactors> (*)(const std::vector<LoraFactors>&);

// Each averaging baseline's rule (method/baselines.h); FLoRA stacks instead (aggregate()).
Rule aggregation_rule(const std::string& method) {
    static const std::map<std::string, Rule> rules = {{"fedit", aggregate_fedit},   {"ffa", aggregate_ffa},
                                                      {"fedsa", aggregate_fedsa},   {"hetlora", aggregate_hetlora},
                                                      {"flexlora", aggregate_flexlora}};
    auto it = rules.find(method);
    if (it == rules.end()) throw Error("LoRA baseline '" + method + "' has no aggregation rule");
    return it->second;
}

}  // namespace

void LoraServer::configure(const std::string& m, const std::vector<std::string>& signatures,
                           std::vector<std::map<std::string, std::vector<int64_t>>> factor_shapes,
                           std::vector<double> scales) {
    method = m;
    exchange = method_spec(m).lora;
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
        s << "  alone (no other client shares the architecture" << (exchange.groups_by_rank ? " and rank" : "")
          << "; trains locally):";
        for (int k : alone) s << " " << k;
        s << "\n";
    }
    return s.str();
}

std::string LoraServer::validate(const LoraUpload& u, double max_abs) const {
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
    for (const auto& kv : u.factors) {
        const std::string why = exceeding_values(kv.second, max_abs);
        if (!why.empty()) return why;
    }
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
            const std::vector<LoraFactors> out = aggregation_rule(method)(f);
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
