// Rank 0's side of the LoRA baselines: how clients are grouped (equal signatures: architecture
// and adapted modules, plus the rank for the rules that average factors of equal shape; a client
// alone in its group trains locally), validation of an upload, and per-group aggregation with the
// pure rules of method/baselines.h. What a client receives is kept per client until its next
// participation ("pending"), so a client that sat rounds out gets the current global state
// (FedAvg) or every FLoRA stack it missed. No MPI, no HDF5.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/core/methods.h"

namespace h2tune {

using TensorMap = std::map<std::string, torch::Tensor>;

struct LoraUpload {
    int client = -1;
    double samples = 0;
    TensorMap factors;  // "A/<i>", "B/<i>"
};

struct LoraServer {
    std::string method;
    LoraExchange exchange;
    std::vector<int> group;                    // per client: group id, or -1 (alone: trains locally)
    std::vector<std::vector<int>> members;     // per group: its clients, ascending
    std::vector<double> scale;                 // per client: s_k = alpha / r_k
    std::vector<std::map<std::string, std::vector<int64_t>>> shapes;  // per client: factor shapes
    std::vector<TensorMap> pending;            // per client: what its next download carries

    // Builds the groups from every client's signature, factor shapes and scale.
    void configure(const std::string& method, const std::vector<std::string>& signatures,
                   std::vector<std::map<std::string, std::vector<int64_t>>> factor_shapes, std::vector<double> scales);
    // One line per group: which clients aggregate together and which train alone.
    std::string describe() const;
    bool grouped(int client) const { return group.at(static_cast<size_t>(client)) >= 0; }
    // Empty when `u` has exactly the factors of its client's method and shapes, all finite, and
    // none larger than `max_abs` in magnitude (0: no limit); otherwise why not.
    std::string validate(const LoraUpload& u, double max_abs = 0) const;
    // Aggregates each group over its accepted uploads (sorted by client: fixed reduction order)
    // and updates `pending` of every member of the group.
    void aggregate(const std::vector<const LoraUpload*>& accepted);

    // Checkpoint state: "pending/<k>/<name>".
    TensorMap state() const;
    void load_state(const TensorMap& state);
};

}  // namespace h2tune
