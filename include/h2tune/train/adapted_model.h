// A frozen base model with one adapter per selected projection (q, k, v, o, gate, up, down).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "h2tune/adapter/triple_adapter.h"
#include "h2tune/model/llama.h"

namespace h2tune {

struct AdaptedModel {
    LlamaForCausalLM model{nullptr};
    std::vector<std::string> names;          // projection names ("model.layers.3.self_attn.q_proj")
    std::vector<std::string> module_types;   // short module type per adapter ("q", ..., "down")
    std::vector<int64_t> layers;             // layer index per adapter
    std::vector<TripleAdapter> adapters;     // same order as names
    std::vector<Projection> projections;     // where each adapter attaches, same order
    int64_t rank = 0;
    double alpha = 0;

    std::vector<torch::Tensor> adapter_parameters() const;  // every lora_A and lora_B
    // Attaches these adapters to their projections and detaches every other adapter from the
    // model. A base model shared by several clients (app/base_model_pool.h) carries the adapters
    // of the client that attached or activated last; each client activates its own before use.
    void activate() const;
    // PEFT-style tensors: "<projection>.lora_A.weight" [r, d_in], "<projection>.lora_B.weight"
    // [d_out, r] with B' = s B (T + I) folded in so that the file is a plain LoRA adapter.
    std::map<std::string, torch::Tensor> peft_state() const;
};

// Short module types in the order the model enumerates its projections.
const std::vector<std::string>& adapter_module_types();  // q, k, v, o, gate, up, down

// Freezes every base parameter and attaches a rank-`rank` adapter to each projection whose
// module type is in `modules`. Adapter initialisation draws from the seed `init_key`.
// The adapters are drawn on the CPU (the same values on every device) and then moved to `device`,
// which must be where the model is.
AdaptedModel attach_adapters(LlamaForCausalLM model, const std::vector<std::string>& modules, int64_t rank,
                             double alpha, uint64_t init_key, torch::Device device = torch::kCPU);
// Loads adapter weights written by save_adapter (PEFT names); shapes must match.
void load_adapter(AdaptedModel& adapted, const std::string& path);
void save_adapter(const AdaptedModel& adapted, const std::string& path);

}  // namespace h2tune
