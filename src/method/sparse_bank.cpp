#include "h2tune/method/sparse_bank.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "h2tune/core/error.h"

namespace h2tune {

namespace {
std::string shape_str(const torch::Tensor& t) {
    std::ostringstream os;
    os << t.sizes();
    return os.str();
}
}  // namespace

torch::Tensor bank_zeros(const BankShape& s) {
    return torch::zeros({s.global_layers, s.modules, s.max_rank * s.max_rank}, torch::kFloat32);
}

std::string validate_mask_indices(const torch::Tensor& mask, int64_t max_rank) {
    const int64_t R2 = max_rank * max_rank, n = mask.size(1);
    if (mask.min().item<int64_t>() < 0 || mask.max().item<int64_t>() >= R2)
        return "mask index out of range [0, " + std::to_string(R2) + ")";
    if (n > 1 && !(mask.narrow(1, 1, n - 1) > mask.narrow(1, 0, n - 1)).all().item<bool>())
        return "mask indices are not strictly ascending";
    return "";
}

std::string validate_upload(const ClientUpload& u, const BankShape& s) {
    if (!(u.samples > 0) || !std::isfinite(u.samples)) return "sample count must be positive";
    if (u.rank < 1 || u.rank > s.max_rank) return "rank " + std::to_string(u.rank) + " outside [1, R]";
    if (u.layers < 1) return "layer count must be positive";
    const int64_t n = u.rank * u.rank;
    if (!u.mask.defined() || u.mask.dim() != 2 || u.mask.size(0) != s.modules || u.mask.size(1) != n ||
        u.mask.scalar_type() != torch::kInt64)
        return "mask must be int64 [" + std::to_string(s.modules) + ", " + std::to_string(n) + "], got " +
               (u.mask.defined() ? shape_str(u.mask) : "nothing");
    const std::string mask_problem = validate_mask_indices(u.mask, s.max_rank);
    if (!mask_problem.empty()) return mask_problem;
    if (!u.relation.defined() || u.relation.dim() != 2 || u.relation.size(0) != s.global_layers ||
        u.relation.size(1) != u.layers || u.relation.scalar_type() != torch::kFloat32)
        return "relation must be float32 [" + std::to_string(s.global_layers) + ", " + std::to_string(u.layers) + "]";
    if (!torch::isfinite(u.relation).all().item<bool>() || (u.relation < 0).any().item<bool>())
        return "relation has negative or non-finite entries";
    if (!torch::allclose(u.relation.sum(0), torch::ones({u.layers}), 1e-4, 1e-4))
        return "relation columns do not sum to 1";
    if (!u.values.defined() || u.values.dim() != 3 || u.values.size(0) != u.layers || u.values.size(1) != s.modules ||
        u.values.size(2) != n || u.values.scalar_type() != torch::kFloat32)
        return "values must be float32 [" + std::to_string(u.layers) + ", " + std::to_string(s.modules) + ", " +
               std::to_string(n) + "], got " + (u.values.defined() ? shape_str(u.values) : "nothing");
    if (!torch::isfinite(u.values).all().item<bool>()) return "values contain NaN or Inf";
    return "";
}

void aggregate_sparse(torch::Tensor& bank, const std::vector<const ClientUpload*>& uploads) {
    torch::NoGradGuard no_grad;
    const int64_t Lg = bank.size(0), M = bank.size(1);
    torch::Tensor numerator = torch::zeros_like(bank);
    torch::Tensor denominator = torch::zeros_like(bank);
    for (const ClientUpload* u : uploads) {
        const torch::Tensor weighted = u->relation * u->samples;   // [L_g, L_k]
        const torch::Tensor coverage = weighted.sum(1);             // [L_g]: sum_l n_k Pi[j, l]
        for (int64_t m = 0; m < M; ++m) {
            const torch::Tensor idx = u->mask[m];                   // [n]
            const torch::Tensor mixed = torch::matmul(weighted, u->values.select(1, m));  // [L_g, n]
            numerator.select(1, m).index_add_(1, idx, mixed);
            denominator.select(1, m).index_add_(1, idx, coverage.unsqueeze(1).expand({Lg, idx.size(0)}));
        }
    }
    const torch::Tensor covered = denominator > 0;
    bank = torch::where(covered, numerator / denominator.clamp_min(1e-30), bank);
}

torch::Tensor bank_gather(const torch::Tensor& bank, const torch::Tensor& mask) {
    const int64_t M = bank.size(1);
    std::vector<torch::Tensor> per_module;
    per_module.reserve(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) per_module.push_back(bank.select(1, m).index_select(1, mask[m]));
    return torch::stack(per_module, 1);  // [L_g, M, n]
}

torch::Tensor relation_mix(const torch::Tensor& relation, const torch::Tensor& slices) {
    const int64_t Lg = slices.size(0), M = slices.size(1), n = slices.size(2);
    return torch::matmul(relation.t(), slices.reshape({Lg, M * n})).reshape({relation.size(1), M, n});
}

}  // namespace h2tune
