// Relation-guided layer alignment and the sparsity masks of the triple-
// matrix adapter (section 1.1), as pure functions. No MPI, no HDF5.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

namespace h2tune {

// Depth prior Z[j, l] = -(j/(L_g-1) - l/(L_k-1))^2 / sigma^2 ([L_g, L_k]); a single layer sits at 0.
torch::Tensor relation_prior(int64_t global_layers, int64_t client_layers, double sigma);
// Pi = softmax(Z / tau) over global slots (dim 0): every column sums to 1. Differentiable in Z.
torch::Tensor relation_matrix(const torch::Tensor& logits, double tau);
// `align = end`: client layer i <-> global slot i + L_g - L_k (one-hot columns).
torch::Tensor relation_end(int64_t global_layers, int64_t client_layers);

// Mask of r^2 flat indices into an R x R matrix, strictly ascending so T's layout is stable.
//   "topk":  the r^2 largest scores (ties broken by the lower index)
//   "block": the leading r x r sub-block (nested-rank ablation; scores ignored)
torch::Tensor select_mask(const torch::Tensor& scores, int64_t rank, int64_t max_rank, const std::string& kind);
// The round-0 scores: a seeded uniform draw per (client, module type), so that different clients'
// masks cover different parts of the bank while the bank is still zero.
torch::Tensor initial_mask_scores(uint64_t key, int64_t max_rank);

}  // namespace h2tune
