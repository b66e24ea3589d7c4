// The LoRA baselines inside `h2tune train`: which factors each method
// exchanges, how clients are grouped (only clients with the same architecture — and, where the
// rule needs it, the same rank — aggregate together; a client alone in its group trains locally),
// and rank 0's per-group aggregation with the pure rules of method/baselines.h. What a client
// receives is kept per client until its next participation ("pending"), so a client that sat
// rounds out gets the current global state (FedAvg) or every FLoRA stack it missed.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/core/wire.h"
#include "h2tune/model/llama_config.h"

namespace h2tune {

using TensorMap = std::map<std::string, torch::Tensor>;

bool is_lora_baseline(const std::string& method);  // fedit, ffa, fedsa, hetlora, flexlora, flora

// The factors a method uploads and downloads per adapted module ("A/<i>", "B/<i>" for adapter i;
// FLoRA downloads "stackA/<i>", "stackB/<i>" to merge into W0).
struct LoraExchange {
    bool upload_A = false, upload_B = false;
    bool freeze_A = false;  // FFA-LoRA: A stays at its shared initialisation
    bool merge = false;     // FLoRA: merge the stack into W0, then restart the LoRA
};
LoraExchange lora_exchange(const std::string& method);

// Clients with equal signatures form a group: the architecture and adapted modules, plus the rank
// for the rules that average factors of equal shape (fedit, ffa, fedsa).
std::string lora_group_signature(const LlamaConfig& config, const std::vector<std::string>& modules, int64_t rank,
                                 const std::string& method);

// Float32 tensor maps on the wire: count, then per tensor its name, shape and values.
void put_tensor_map(ByteWriter& w, const TensorMap& tensors);
TensorMap get_tensor_map(ByteReader& r);

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
    // Empty when `u` has exactly the factors of its client's method and shapes, all finite.
    std::string validate(const LoraUpload& u) const;
    // Aggregates each group over its accepted uploads (sorted by client: fixed reduction order)
    // and updates `pending` of every member of the group.
    void aggregate(const std::vector<const LoraUpload*>& accepted);

    // Checkpoint state: "pending/<k>/<name>".
    TensorMap state() const;
    void load_state(const TensorMap& state);
};

}  // namespace h2tune
