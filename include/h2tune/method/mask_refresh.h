// Mask re-selection at round boundaries, `mask_refresh = N`, as pure
// functions. Rank 0 holds the global bank and every client's latest relation Pi_k, so it scores
// all R*R entries of a client's personalised middle matrices and picks the new mask; the client
// contributes only what it alone knows, the first-order Taylor statistics of the entries it uses.
// No MPI, no HDF5.
#pragma once

#include <torch/types.h>

namespace h2tune {

// mask_refresh = N re-selects masks at the start of rounds N, 2N, ... (never round 0; 0 = never).
bool mask_refresh_due(int64_t every, int round);

// |M| score: S[m, e] = sum_l | sum_j Pi[j, l] G[j, m, e] |, i.e. the magnitude of entry e of the
// client's personalised matrices M_k^{l,m}, summed over its layers. bank [L_g, M, R*R],
// relation [L_g, L_k] -> [M, R*R] float32.
torch::Tensor magnitude_mask_scores(const torch::Tensor& bank, const torch::Tensor& relation);

// First-order Taylor score EMA(sum_l |M ⊙ dL/dM|). Inside the current mask the client measured it
// (`taylor` [M, r^2], in mask order). Outside, the entry is not part of T, so no gradient exists;
// its score is its magnitude (`magnitude` [M, R*R], from magnitude_mask_scores) times the mean
// gradient magnitude the client observed for that module type (`grad_scale` [M]), the same
// first-order estimate with the unobserved gradient replaced by its expectation. -> [M, R*R].
torch::Tensor taylor_mask_scores(const torch::Tensor& magnitude, const torch::Tensor& mask,
                                 const torch::Tensor& taylor, const torch::Tensor& grad_scale);

// Client-side accumulator of the Taylor statistics over local steps: an exponential moving average
// (decay `decay` per step) of sum_l |T ⊙ dL/dT| per (module, mask entry) and of mean |dL/dT| per
// module. Reset whenever the mask changes (the positions then mean other entries).
class TaylorScore {
public:
    TaylorScore() = default;
    TaylorScore(int64_t modules, int64_t entries, double decay = 0.9);

    // values, grad: [L_k, M, r^2] (T and dL/dT of one optimiser step).
    void accumulate(const torch::Tensor& values, const torch::Tensor& grad);
    void reset();
    bool empty() const { return steps_ == 0; }
    int64_t steps() const { return steps_; }
    const torch::Tensor& scores() const { return scores_; }          // [M, r^2]
    const torch::Tensor& grad_scale() const { return grad_scale_; }  // [M]
    // Restores a saved state (checkpoints, tests).
    void load(const torch::Tensor& scores, const torch::Tensor& grad_scale, int64_t steps);

private:
    double decay_ = 0.9;
    int64_t steps_ = 0;
    torch::Tensor scores_, grad_scale_;
};

}  // namespace h2tune
