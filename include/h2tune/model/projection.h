// A bias-free linear projection of the decoder (q, k, v, o, gate, up, down) with a hook for an
// adapter: forward(x) = x W^T + adapter.delta(x). This is where LoRA-style adapters attach; the
// model knows nothing about what the adapter computes. Without an adapter the output is exactly
// torch::linear(x, weight), bit for bit.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>

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
};

struct ProjectionOptions {
    ProjectionOptions(int64_t in_features, int64_t out_features)
        : in_features_(in_features), out_features_(out_features) {}
    TORCH_ARG(int64_t, in_features);
    TORCH_ARG(int64_t, out_features);
    // Standard deviation of the normal initialisation (Hugging Face's initializer_range).
    TORCH_ARG(double, init_std) = 0.02;
};

class ProjectionImpl : public torch::nn::Cloneable<ProjectionImpl> {
public:
    ProjectionImpl(int64_t in_features, int64_t out_features)
        : ProjectionImpl(ProjectionOptions(in_features, out_features)) {}
    explicit ProjectionImpl(const ProjectionOptions& options_);

    void reset() override;                 // registers `weight` [out, in] and initialises it
    void reset_parameters();               // normal(0, init_std)
    void pretty_print(std::ostream& stream) const override;

    torch::Tensor forward(const torch::Tensor& x);

    // nullptr removes the adapter. clone() of a module shares the adapter object with the original.
    void set_adapter(std::shared_ptr<ProjectionAdapter> adapter) { adapter_ = std::move(adapter); }
    const std::shared_ptr<ProjectionAdapter>& adapter() const { return adapter_; }

    ProjectionOptions options;
    torch::Tensor weight;                  // [out_features, in_features], the frozen base weight

private:
    std::shared_ptr<ProjectionAdapter> adapter_;
};
TORCH_MODULE(Projection);

}  // namespace h2tune
