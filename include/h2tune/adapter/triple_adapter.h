// The sparsified triple-matrix adapter of H2Tune, which with no middle
// matrix is plain LoRA:
//
//     delta(x) = s * B (T + I) A x,     s = alpha / r
//
// A: r x d_in (Kaiming-uniform), B: d_out x r (zeros), T: r x r (optional; set per step by the
// owner, e.g. the relation-mixed view of the shared middle matrix). Computed as a chain of small
// products, never forming the d_out x d_in update. Pure math: no MPI, no HDF5.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "h2tune/model/projection.h"

namespace h2tune {

struct TripleAdapterOptions {
    TripleAdapterOptions(int64_t in_features, int64_t out_features, int64_t rank)
        : in_features_(in_features), out_features_(out_features), rank_(rank) {}
    TORCH_ARG(int64_t, in_features);
    TORCH_ARG(int64_t, out_features);
    TORCH_ARG(int64_t, rank);
    TORCH_ARG(double, alpha) = 16.0;
};

class TripleAdapterImpl : public torch::nn::Cloneable<TripleAdapterImpl>, public ProjectionAdapter {
public:
    explicit TripleAdapterImpl(const TripleAdapterOptions& options_);

    void reset() override;  // registers lora_A (Kaiming-uniform, a = sqrt(5)) and lora_B (zeros)
    torch::Tensor delta(const torch::Tensor& x) override;
    // lora_A, lora_B and the middle matrix, those defined and requiring grad (for activation
    // checkpointing: the middle is usually computed outside the block, from shared parameters).
    std::vector<torch::Tensor> differentiable_tensors() const override;

    // T (r x r) used by the following forwards; an undefined tensor means T = 0 (plain LoRA).
    // Gradients flow into whatever T was computed from.
    void set_middle(torch::Tensor middle);
    const torch::Tensor& middle() const { return middle_; }
    double scale() const { return options.alpha() / static_cast<double>(options.rank()); }

    // The exact PEFT-LoRA equivalent: (A' = A, B' = s B (T + I)).
    std::pair<torch::Tensor, torch::Tensor> peft_factors() const;

    TripleAdapterOptions options;
    torch::Tensor lora_A;  // [r, d_in]
    torch::Tensor lora_B;  // [d_out, r]

private:
    torch::Tensor middle_;
};
TORCH_MODULE(TripleAdapter);

}  // namespace h2tune
