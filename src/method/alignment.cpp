#include "h2tune/method/alignment.h"

#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "h2tune/core/error.h"
#include "h2tune/core/rng.h"

namespace h2tune {

namespace {
double depth(int64_t i, int64_t n) { return n > 1 ? static_cast<double>(i) / static_cast<double>(n - 1) : 0.0; }
}  // namespace

torch::Tensor relation_prior(int64_t global_layers, int64_t client_layers, double sigma) {
    if (global_layers < 1 || client_layers < 1 || !(sigma > 0)) throw ConfigError("relation prior: bad sizes or sigma");
    torch::Tensor z = torch::empty({global_layers, client_layers}, torch::kFloat32);
    auto acc = z.accessor<float, 2>();
    for (int64_t j = 0; j < global_layers; ++j)
        for (int64_t l = 0; l < client_layers; ++l) {
            const double d = depth(j, global_layers) - depth(l, client_layers);
            acc[j][l] = static_cast<float>(-d * d / (sigma * sigma));
        }
    return z;
}

torch::Tensor relation_matrix(const torch::Tensor& logits, double tau) { return torch::softmax(logits / tau, 0); }

torch::Tensor relation_end(int64_t global_layers, int64_t client_layers) {
    if (client_layers > global_layers)
        throw ConfigError("align = end needs global_layers >= every client's layer count");
    torch::Tensor pi = torch::zeros({global_layers, client_layers}, torch::kFloat32);
    for (int64_t i = 0; i < client_layers; ++i) pi[i + global_layers - client_layers][i] = 1.0f;
    return pi;
}

torch::Tensor select_mask(const torch::Tensor& scores, int64_t rank, int64_t max_rank, const std::string& kind) {
    if (rank < 1 || rank > max_rank) throw ConfigError("mask: rank must be in [1, R]");
    const int64_t n = rank * rank;
    if (kind == "block") {
        torch::Tensor rows = torch::arange(rank, torch::kInt64).unsqueeze(1) * max_rank;
        return (rows + torch::arange(rank, torch::kInt64).unsqueeze(0)).reshape({n});
    }
    if (kind != "topk") throw ConfigError("mask: unknown kind '" + kind + "' (topk or block)");
    if (scores.numel() != max_rank * max_rank) throw ConfigError("mask: scores must have R*R entries");
    // A stable descending sort breaks ties by the lower index, so the selection is deterministic.
    torch::Tensor flat = scores.reshape({-1}).to(torch::kFloat64);
    std::vector<int64_t> order(static_cast<size_t>(flat.numel()));
    auto acc = flat.accessor<double, 1>();
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return acc[a] > acc[b]; });
    order.resize(static_cast<size_t>(n));
    std::sort(order.begin(), order.end());
    return torch::tensor(order, torch::kInt64);
}

torch::Tensor initial_mask_scores(uint64_t key, int64_t max_rank) {
    SplitMix64 rng(key);
    torch::Tensor s = torch::empty({max_rank * max_rank}, torch::kFloat32);
    auto acc = s.accessor<float, 1>();
    for (int64_t i = 0; i < s.numel(); ++i) acc[i] = static_cast<float>(rng.uniform());
    return s;
}

}  // namespace h2tune
