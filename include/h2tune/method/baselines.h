// Aggregation rules of the LoRA baselines as pure functions on tensors: one
// call aggregates one adapted module over one group of clients. No MPI, no HDF5, no files: the
// caller gathers the factors, calls the rule, and sends each client its result.
//
// Conventions. Client k's factors for a module are A_k: [r_k, d_in] and B_k: [d_out, r_k]; its
// update is Delta W_k = s_k B_k A_k with s_k = alpha / r_k. Weights are p_k = n_k / sum_j n_j.
// Clients in a group share the architecture (d_in, d_out, dtype, device) but may differ in rank
// where the rule allows it. Clients are reduced in the order given: callers sort by client id so
// that the floating-point sums, hence the results, are the same on every run.
//
// Every rule validates its group first and throws ModelError naming the rule, the client and the
// problem (empty group, shapes, dtype, device, NaN/Inf, non-positive sample count or scale).
// Results are fresh tensors without autograd history, each owned by one client alone (no two
// results share storage with each other or with the inputs, so a client may train them in place);
// factors a rule does not touch are returned as bit-identical copies.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace h2tune {

// One client's LoRA factors for one adapted module.
struct LoraFactors {
    torch::Tensor A;      // [r_k, d_in]
    torch::Tensor B;      // [d_out, r_k]
    double samples = 0;   // n_k > 0
    double scale = 1;     // s_k = alpha / r_k > 0
    int client = -1;      // only used to name the client in error messages (position if < 0)

    int64_t rank() const { return A.defined() ? A.size(0) : 0; }
};

// p_k = n_k / sum_j n_j, summed in the order given. Throws ModelError on an empty list or a count
// that is not finite and positive.
std::vector<double> client_weights(const std::vector<double>& samples);

// ||B A||_F without forming the d_out x d_in product: ||BA||_F^2 = trace(A^T B^T B A)
// = trace((B^T B)(A A^T)) = sum_ij (B^T B)_ij (A A^T)_ij (both Gram matrices are symmetric), which
// needs only r x r matrices, O((d_in + d_out) r^2) work instead of O(d_out d_in r). Computed in
// float64 so that the cancellation in the Gram form does not cost float32 precision. The scale
// s is not included.
double lora_product_norm(const torch::Tensor& A, const torch::Tensor& B);

// s_k B_k A_k: [d_out, d_in].
torch::Tensor lora_update(const LoraFactors& f);

// sum_k p_k s_k B_k A_k: [d_out, d_in], the update FedAvg would produce on full weights.
torch::Tensor average_update(const std::vector<LoraFactors>& clients);

// Zero rows appended to A and zero columns to B up to `rank` (>= f.rank()); B A is unchanged.
LoraFactors pad_to_rank(const LoraFactors& f, int64_t rank);
// The leading `rank` (<= f.rank()) rows of A and columns of B.
LoraFactors truncate_to_rank(const LoraFactors& f, int64_t rank);

// fedit (FedIT): A <- sum p_k A_k and B <- sum p_k B_k, the same for every client. Needs equal
// ranks (throws ModelError otherwise: group the clients by shape first).
// Scales are not involved; with equal ranks and one alpha they are equal anyway.
std::vector<LoraFactors> aggregate_fedit(const std::vector<LoraFactors>& clients);

// ffa (FFA-LoRA): A is frozen at a shared seed, so every client must hold the bit-identical A
// (ModelError otherwise: averaging B is only the average of the updates when A is shared); A is
// returned untouched and B <- sum p_k B_k. Needs equal ranks.
std::vector<LoraFactors> aggregate_ffa(const std::vector<LoraFactors>& clients);

// fedsa (FedSA-LoRA): A <- sum p_k A_k (the shared, general part), B stays local and is returned
// untouched. Needs equal ranks.
std::vector<LoraFactors> aggregate_fedsa(const std::vector<LoraFactors>& clients);

// HetLoRA's aggregation weights: w_k proportional to p_k ||B_k A_k||_F (unscaled factors, the
// quantity being averaged), normalised to sum 1; p_k when every norm is zero (e.g. round one,
// where LoRA initialises B = 0).
std::vector<double> hetlora_weights(const std::vector<LoraFactors>& clients);

// hetlora (HetLoRA): zero-pad every A_k, B_k to R = max_k r_k, average the padded factors with
// hetlora_weights, then truncate back: client k receives the leading r_k rows of A and columns of
// B. Ranks may differ.
std::vector<LoraFactors> aggregate_hetlora(const std::vector<LoraFactors>& clients);

// flexlora (FlexLoRA): Delta W = sum p_k s_k B_k A_k = U S V^T (thin SVD), and client k receives
// the best rank-r_k approximation (Eckart-Young) in its own parametrisation:
//     B'_k = U_r sqrt(S_r) / sqrt(s_k),   A'_k = sqrt(S_r) V_r^T / sqrt(s_k),
// so that s_k B'_k A'_k = U_r S_r V_r^T. The singular values and 1/s_k are split evenly between the
// factors, so that both carry the same spectrum and neither dominates the next round's gradients. When r_k exceeds
// min(d_out, d_in) the extra rows of A' and columns of B' are zero. Ranks may differ.
std::vector<LoraFactors> aggregate_flexlora(const std::vector<LoraFactors>& clients);

// flora (FLoRA) stacking: B = [p_1 s_1 B_1, ..., p_K s_K B_K]: [d_out, sum r_k] and
// A = [A_1; ...; A_K]: [sum r_k, d_in], so that B A = sum p_k s_k B_k A_k exactly (block product,
// no cross terms). The scales are folded into B: the stack is used with scale 1.
struct FloraStack {
    torch::Tensor A;  // [sum r_k, d_in]
    torch::Tensor B;  // [d_out, sum r_k]
};
FloraStack flora_stack(const std::vector<LoraFactors>& clients);

// The stacked product B A: [d_out, d_in]. Every client adds it into its frozen W0 (W0 <- W0 +
// Delta W) and then starts a fresh LoRA (new A at random, B = 0) for the next round; nothing of the
// old factors is sent back. Ranks may differ.
torch::Tensor flora_merged_update(const std::vector<LoraFactors>& clients);

}  // namespace h2tune
