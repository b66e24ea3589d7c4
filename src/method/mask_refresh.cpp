#include "h2tune/method/mask_refresh.h"

#include <torch/torch.h>

#include <vector>

#include "h2tune/core/error.h"

namespace h2tune {

bool mask_refresh_due(int64_t every, int round) { return every > 0 && round > 0 && round % every == 0; }

torch::Tensor magnitude_mask_scores(const torch::Tensor& bank, const torch::Tensor& relation) {
    if (bank.dim() != 3 || relation.dim() != 2 || relation.size(0) != bank.size(0))
        throw ModelError("magnitude_mask_scores: bank [L_g, M, R*R] and relation [L_g, L_k] do not match");
    torch::NoGradGuard no_grad;
    const torch::Tensor pi = relation.to(torch::kFloat32);
    // [L_g, L_k]^T x [L_g, M*R^2] -> [L_k, M*R^2]: the personalised matrices of every layer.
    torch::Tensor personal = torch::matmul(pi.t(), bank.reshape({bank.size(0), -1}));
    return personal.abs().sum(0).reshape({bank.size(1), bank.size(2)});
}

torch::Tensor taylor_mask_scores(const torch::Tensor& magnitude, const torch::Tensor& mask, const torch::Tensor& taylor,
                                 const torch::Tensor& grad_scale) {
    if (magnitude.dim() != 2 || !mask.sizes().equals(taylor.sizes()) || mask.size(0) != magnitude.size(0) ||
        grad_scale.numel() != magnitude.size(0))
        throw ModelError("taylor_mask_scores: shapes of magnitude [M, R*R], mask and taylor [M, r^2], "
                         "grad_scale [M] do not match");
    torch::NoGradGuard no_grad;
    torch::Tensor scores = magnitude.to(torch::kFloat32) * grad_scale.to(torch::kFloat32).reshape({-1, 1});
    scores.scatter_(1, mask.to(torch::kInt64), taylor.to(torch::kFloat32));
    return scores;
}

TaylorScore::TaylorScore(int64_t modules, int64_t entries, double decay)
    : decay_(decay), scores_(torch::zeros({modules, entries})), grad_scale_(torch::zeros({modules})) {
    if (!(decay >= 0.0 && decay < 1.0)) throw ConfigError("Taylor score: decay must be in [0, 1)");
}

void TaylorScore::accumulate(const torch::Tensor& values, const torch::Tensor& grad) {
    if (!values.sizes().equals(grad.sizes()) || values.dim() != 3 || values.size(1) != scores_.size(0) ||
        values.size(2) != scores_.size(1))
        throw ModelError("Taylor score: values and gradient must both be [L_k, M, r^2]");
    torch::NoGradGuard no_grad;
    // The statistics live on the CPU (they travel to rank 0); T may be on a GPU.
    const torch::Tensor g = grad.detach().abs();
    const torch::Tensor step_scores = (values.detach() * grad.detach()).abs().sum(0).cpu();
    const torch::Tensor step_scale = g.mean(std::vector<int64_t>{0, 2}).cpu();
    // Bias-free start: the first step sets the average instead of blending with zeros.
    const double keep = steps_ == 0 ? 0.0 : decay_;
    scores_.mul_(keep).add_(step_scores, 1.0 - keep);
    grad_scale_.mul_(keep).add_(step_scale, 1.0 - keep);
    ++steps_;
}

void TaylorScore::reset() {
    scores_.zero_();
    grad_scale_.zero_();
    steps_ = 0;
}

void TaylorScore::load(const torch::Tensor& scores, const torch::Tensor& grad_scale, int64_t steps) {
    if (!scores.sizes().equals(scores_.sizes()) || !grad_scale.sizes().equals(grad_scale_.sizes()) || steps < 0)
        throw ModelError("Taylor score state has the wrong shape");
    scores_ = scores.to(torch::kFloat32).clone();
    grad_scale_ = grad_scale.to(torch::kFloat32).clone();
    steps_ = steps;
}

}  // namespace h2tune
