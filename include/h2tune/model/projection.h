// A linear projection of the decoder (q, k, v, o, gate, up, down, and the LM head) with a hook for
// an adapter: forward(x) = x W^T (+ b) + adapter.delta(x). This is where LoRA-style adapters attach;
// the model knows nothing about what the adapter computes. Without an adapter the output is exactly
// torch::linear(x, weight, bias), bit for bit. The frozen weight may be stored in bfloat16 or
// float16 while adapters stay float32: the adapter then sees x in float32 and its delta is added
// in the weight's dtype (as PEFT does).
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <vector>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace h2tune {

// The additive term an adapter contributes to a projection. `x` is the projection's input
// [..., in_features]; the result must be [..., out_features] (same leading shape).
struct ProjectionAdapter {
    virtual ~ProjectionAdapter() = default;
    virtual torch::Tensor delta(const torch::Tensor& x) = 0;
    // Every tensor delta() reads that may require grad (its parameters, a middle matrix computed
    // elsewhere), for activation checkpointing (block_checkpoint.h), which must pass them to autograd
    // explicitly or they get no gradient. The default throws ModelError: an adapter that does not
    // say what it differentiates cannot be checkpointed (silently missing gradients otherwise); one
    // with nothing trainable returns {}.
    virtual std::vector<torch::Tensor> differentiable_tensors() const;
};

struct ProjectionOptions {
    ProjectionOptions(int64_t in_features, int64_t out_features)
        : in_features_(in_features), out_features_(out_features) {}
    TORCH_ARG(int64_t, in_features);
    TORCH_ARG(int64_t, out_features);
    // Standard deviation of the normal initialisation (Hugging Face's initializer_range).
    TORCH_ARG(double, init_std) = 0.02;
    TORCH_ARG(bool, bias) = false;                   // registers `bias` [out_features] (zeros)
    TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;  // storage dtype of weight and bias
    // false: parameters are allocated but not drawn, for a checkpoint that overwrites them all.
    TORCH_ARG(bool, initialise) = true;
};

class ProjectionImpl : public torch::nn::Cloneable<ProjectionImpl> {
public:
    ProjectionImpl(int64_t in_features, int64_t out_features)
        : ProjectionImpl(ProjectionOptions(in_features, out_features)) {}
    explicit ProjectionImpl(const ProjectionOptions& options_);

    void reset() override;                 // registers `weight` [out, in] (and `bias`), initialises them
    void reset_parameters();               // weight normal(0, init_std), bias zeros
    void pretty_print(std::ostream& stream) const override;

    torch::Tensor forward(const torch::Tensor& x);

    // nullptr removes the adapter. clone() of a module shares the adapter object with the original.
    void set_adapter(std::shared_ptr<ProjectionAdapter> adapter) { adapter_ = std::move(adapter); }
    const std::shared_ptr<ProjectionAdapter>& adapter() const { return adapter_; }

    ProjectionOptions options;
    torch::Tensor weight;                  // [out_features, in_features], the frozen base weight
    torch::Tensor bias;                    // [out_features], or undefined when options.bias() is false

private:
    std::shared_ptr<ProjectionAdapter> adapter_;
};
TORCH_MODULE(Projection);

}  // namespace h2tune
