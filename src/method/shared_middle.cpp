#include "h2tune/method/shared_middle.h"

#include <torch/torch.h>

#include "h2tune/core/error.h"
#include "h2tune/core/rng.h"
#include "h2tune/method/alignment.h"
#include "h2tune/method/sparse_bank.h"

namespace h2tune {

SharedMiddle::SharedMiddle(const SharedMiddleOptions& o) : options_(o) {
    if (o.rank < 1 || o.rank > o.max_rank) throw ConfigError("shared middle: rank must be in [1, R]");
    if (o.layers < 1 || o.global_layers < 1 || o.modules < 1) throw ConfigError("shared middle: sizes must be positive");
    std::vector<torch::Tensor> rows;
    for (int64_t m = 0; m < o.modules; ++m)
        rows.push_back(select_mask(initial_mask_scores(stream_key(o.mask_key, static_cast<uint64_t>(m)), o.max_rank),
                                   o.rank, o.max_rank, o.mask));
    masks_ = torch::stack(rows);
    const auto on_device = torch::TensorOptions().dtype(torch::kFloat32).device(o.device);
    if (o.align == "end") {
        fixed_ = relation_end(o.global_layers, o.layers).to(o.device);
        z_ = torch::zeros({o.global_layers, o.layers}, on_device);
    } else {
        z_ = relation_prior(o.global_layers, o.layers, o.sigma).to(o.device);
        if (o.align == "relation") z_.set_requires_grad(true);
        else if (o.align != "depth") throw ConfigError("shared middle: unknown align '" + o.align + "'");
    }
    d_ = torch::zeros({o.layers, o.modules, entries()}, on_device).set_requires_grad(true);
    slices_ = torch::zeros({o.global_layers, o.modules, entries()}, on_device);
    taylor_ = TaylorScore(o.modules, entries());
}

std::vector<torch::Tensor> SharedMiddle::parameters() const {
    std::vector<torch::Tensor> p = {d_};
    if (options_.align == "relation") p.push_back(z_);
    return p;
}

torch::Tensor SharedMiddle::relation() const {
    if (options_.align == "end") return fixed_;
    return relation_matrix(z_, options_.tau);
}

void SharedMiddle::begin_round(const torch::Tensor& slices) {
    const auto& o = options_;
    if (slices.dim() != 3 || slices.size(0) != o.global_layers || slices.size(1) != o.modules ||
        slices.size(2) != entries())
        throw CommError("received bank slices have the wrong shape");
    slices_ = slices.to(options_.device, torch::kFloat32).contiguous();
    torch::NoGradGuard no_grad;
    d_.zero_();
}

torch::Tensor SharedMiddle::middle_values() const { return relation_mix(relation(), slices_) + d_; }

torch::Tensor SharedMiddle::downloaded_values() const {
    torch::NoGradGuard no_grad;
    return relation_mix(relation(), slices_);
}

torch::Tensor SharedMiddle::middle_matrix(const torch::Tensor& values, int64_t layer, int64_t module) const {
    return values.select(0, layer).select(0, module).view({options_.rank, options_.rank});
}

torch::Tensor SharedMiddle::proximal_kl(const torch::Tensor& values) const {
    const torch::Tensor target = torch::softmax(downloaded_values(), -1);
    const torch::Tensor log_q = torch::log_softmax(values, -1);
    // KL(p || q) = sum p (log p - log q), averaged over (layer, module).
    return (target * (torch::log(target.clamp_min(1e-30)) - log_q)).sum(-1).mean();
}

void SharedMiddle::set_masks(const torch::Tensor& masks) {
    if (!masks.sizes().equals(masks_.sizes()))
        throw CommError("new masks have the wrong shape");
    const torch::Tensor m = masks.to(torch::kInt64).contiguous().clone();
    const std::string why = validate_mask_indices(m, options_.max_rank);
    if (!why.empty()) throw CommError("new masks: " + why);
    masks_ = m;
    taylor_.reset();
}

void SharedMiddle::accumulate_taylor(const torch::Tensor& values) {
    if (!options_.track_taylor || !d_.grad().defined()) return;
    taylor_.accumulate(values, d_.grad());
}

void SharedMiddle::load_state(const torch::Tensor& z, const torch::Tensor& masks, const torch::Tensor& residual,
                              const torch::Tensor& slices) {
    torch::NoGradGuard no_grad;
    if (!z.sizes().equals(z_.sizes()) || !masks.sizes().equals(masks_.sizes()) ||
        !residual.sizes().equals(d_.sizes()) || !slices.sizes().equals(slices_.sizes()))
        throw ModelError("shared middle state has the wrong shape");
    const torch::Tensor m = masks.to(torch::kInt64).contiguous().clone();
    const std::string why = validate_mask_indices(m, options_.max_rank);
    if (!why.empty()) throw ModelError("shared middle state: " + why);
    z_.copy_(z);
    d_.copy_(residual);
    masks_ = m;
    slices_ = slices.to(options_.device, torch::kFloat32).contiguous().clone();
}

}  // namespace h2tune
