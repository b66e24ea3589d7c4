#include "h2tune/train/adapted_model.h"

#include <torch/torch.h>

#include <algorithm>

#include "h2tune/core/error.h"
#include "h2tune/model/safetensors.h"

namespace h2tune {

const std::vector<std::string>& adapter_module_types() {
    static const std::vector<std::string> t = {"q", "k", "v", "o", "gate", "up", "down"};
    return t;
}

std::vector<torch::Tensor> AdaptedModel::adapter_parameters() const {
    std::vector<torch::Tensor> out;
    for (const auto& a : adapters) {
        out.push_back(a->lora_A);
        out.push_back(a->lora_B);
    }
    return out;
}

void AdaptedModel::activate() const {
    for (auto& [name, projection] : model->projections()) projection->set_adapter(nullptr);
    for (size_t i = 0; i < adapters.size(); ++i) {
        Projection projection = projections[i];  // a handle; the const member's would be read-only
        projection->set_adapter(adapters[i].ptr());
    }
}

std::map<std::string, torch::Tensor> AdaptedModel::peft_state() const {
    std::map<std::string, torch::Tensor> out;
    for (size_t i = 0; i < adapters.size(); ++i) {
        auto [a, b] = adapters[i]->peft_factors();
        out[names[i] + ".lora_A.weight"] = a.contiguous();
        out[names[i] + ".lora_B.weight"] = b.contiguous();
    }
    return out;
}

AdaptedModel attach_adapters(LlamaForCausalLM model, const std::vector<std::string>& modules, int64_t rank,
                             double alpha, uint64_t init_key, torch::Device device) {
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    AdaptedModel out;
    out.model = model;
    out.rank = rank;
    out.alpha = alpha;
    const auto& types = adapter_module_types();
    torch::manual_seed(init_key & 0x7fffffffffffffffULL);
    for (int64_t layer = 0; layer < model->num_layers(); ++layer) {
        for (size_t m = 0; m < types.size(); ++m) {
            if (std::find(modules.begin(), modules.end(), types[m]) == modules.end()) continue;
            Projection proj = model->projection(layer, llama_projection_names()[m]);
            TripleAdapter adapter(TripleAdapterOptions(proj->options.in_features(), proj->options.out_features(), rank)
                                      .alpha(alpha));
            adapter->to(device);
            proj->set_adapter(adapter.ptr());
            out.names.push_back("model.layers." + std::to_string(layer) + "." +
                                (m < 4 ? "self_attn." : "mlp.") + llama_projection_names()[m]);
            out.module_types.push_back(types[m]);
            out.layers.push_back(layer);
            out.adapters.push_back(adapter);
            out.projections.push_back(proj);
        }
    }
    if (out.adapters.empty()) throw ConfigError("no adapters attached: the module list selects no projection");
    return out;
}

void save_adapter(const AdaptedModel& adapted, const std::string& path) {
    std::map<std::string, std::string> meta = {{"format", "pt"},
                                               {"peft_type", "LORA"},
                                               {"r", std::to_string(adapted.rank)},
                                               {"lora_alpha", std::to_string(adapted.rank)}};
    // The scale s = alpha / r is folded into B, so a PEFT loader must use lora_alpha = r (s = 1).
    safetensors_save(path, adapted.peft_state(), meta);
}

void load_adapter(AdaptedModel& adapted, const std::string& path) {
    auto tensors = safetensors_load(path);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < adapted.adapters.size(); ++i) {
        auto& ad = adapted.adapters[i];
        auto a = tensors.find(adapted.names[i] + ".lora_A.weight");
        auto b = tensors.find(adapted.names[i] + ".lora_B.weight");
        if (a == tensors.end() || b == tensors.end())
            throw ModelError(path + ": adapter tensors for " + adapted.names[i] + " are missing");
        if (!a->second.sizes().equals(ad->lora_A.sizes()) || !b->second.sizes().equals(ad->lora_B.sizes()))
            throw ModelError(path + ": adapter " + adapted.names[i] + " has rank or shape different from the model's");
        ad->lora_A.copy_(a->second.to(torch::kFloat32));
        // The file holds s B (T + I); with T unset the adapter reproduces it as s B.
        ad->lora_B.copy_(b->second.to(torch::kFloat32) / ad->scale());
        ad->set_middle({});
    }
}

}  // namespace h2tune
