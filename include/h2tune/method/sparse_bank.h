// Rank-0 side of H2Tune, as pure functions on tensors: the global
// bank of middle matrices, validation of client uploads, the weighted coverage-normalised sparse
// aggregation, and the personalised download. No MPI, no HDF5: `comm` moves the bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace h2tune {

// G: [L_g, M, R * R] float32; entry (j, m, e) is element e (row-major) of slot j's R x R middle
// matrix for module type m.
struct BankShape {
    int64_t global_layers = 0;  // L_g
    int64_t modules = 0;        // M
    int64_t max_rank = 0;       // R
};

torch::Tensor bank_zeros(const BankShape& shape);

// What client k sends after a round.
struct ClientUpload {
    int client = -1;
    double samples = 0;               // n_k
    int64_t rank = 0;                 // r_k
    int64_t layers = 0;               // L_k
    torch::Tensor mask;               // [M, r_k^2] int64, strictly ascending flat indices into R*R
    torch::Tensor relation;           // [L_g, L_k] float32, columns sum to 1 (Pi_k)
    torch::Tensor values;             // [L_k, M, r_k^2] float32, the values of T_k^{l,m}
};

// Empty string when every row of `mask` ([M, n] int64) holds strictly ascending indices in [0, R*R),
// else the reason.
std::string validate_mask_indices(const torch::Tensor& mask, int64_t max_rank);

// Empty string when the upload is usable, else the reason it is not (shapes, index ranges and
// order, finite values, column-stochastic relation, positive sample count).
std::string validate_upload(const ClientUpload& upload, const BankShape& shape);

// A finite but absurd update (a diverged client) would swamp the bank as surely as a NaN: why
// `values` is refused when its largest magnitude exceeds `max_abs` (0: no limit), else "".
std::string exceeding_values(const torch::Tensor& values, double max_abs);

// G[j,m,e] <- sum_{k,l} w_k(j,l,e) T_k^{l,m}[e] / sum_{k,l} w_k(j,l,e), with
// w_k(j,l,e) = n_k Pi_k[j,l] 1[e in Omega_k^m]; entries nobody covered keep their value.
// Clients are summed in the order given (callers sort by client id for a fixed reduction order).
void aggregate_sparse(torch::Tensor& bank, const std::vector<const ClientUpload*>& uploads);

// The slices client k needs: G[:, m, Omega_k^m] for every m -> [L_g, M, r_k^2]. Its personalised
// middle matrices are then relation_mix(Pi_k, slices).
torch::Tensor bank_gather(const torch::Tensor& bank, const torch::Tensor& mask);

// M_k^{l,m}[Omega] = sum_j Pi_k[j, l] G^{j,m}[Omega]: [L_g, L_k] x [L_g, M, n] -> [L_k, M, n].
// Differentiable in both arguments (the relation learns through it).
torch::Tensor relation_mix(const torch::Tensor& relation, const torch::Tensor& slices);

}  // namespace h2tune
