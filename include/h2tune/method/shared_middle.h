// The client side of H2Tune's shared parameters: per module type a
// mask of r_k^2 entries, the relation logits Z (L_g x L_k) and the residual D (L_k x M x r_k^2),
// the slices of the global bank received this round, and from them every adapter's middle matrix
//     T_k^{l,m} = sum_j Pi_k[j, l] G^{j,m}[Omega_k^m] + D^{l,m}.
// Pure math on tensors: no MPI, no HDF5.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/method/mask_refresh.h"

namespace h2tune {

struct SharedMiddleOptions {
    int64_t global_layers = 1;  // L_g
    int64_t layers = 1;         // L_k
    int64_t modules = 1;        // M (the configured module types, in order)
    int64_t rank = 1;           // r_k
    int64_t max_rank = 1;       // R
    std::string mask = "topk";  // topk | block
    std::string align = "relation";  // relation | depth | end
    double tau = 1.0, sigma = 0.5;
    uint64_t mask_key = 0;      // seeds the round-0 mask scores of this client
    bool track_taylor = false;  // keep Taylor statistics (mask_refresh with mask_score = taylor)
    torch::Device device = torch::kCPU;  // where Z, D and the slices live (the model's device)
};

class SharedMiddle {
public:
    explicit SharedMiddle(const SharedMiddleOptions& options);

    const SharedMiddleOptions& options() const { return options_; }
    const torch::Tensor& masks() const { return masks_; }  // [M, r^2] int64, ascending rows
    int64_t entries() const { return options_.rank * options_.rank; }

    // Trainable shared parameters theta_s: {D} plus {Z} when align = relation.
    std::vector<torch::Tensor> parameters() const;
    torch::Tensor relation() const;  // Pi_k [L_g, L_k] (differentiable in Z)
    const torch::Tensor& relation_logits() const { return z_; }
    const torch::Tensor& residual() const { return d_; }
    const torch::Tensor& received_slices() const { return slices_; }

    // Starts a round: stores the received slices G[:, m, Omega_m] ([L_g, M, r^2]) and zeroes D.
    void begin_round(const torch::Tensor& slices);
    // T for every (layer, module): [L_k, M, r^2], differentiable in Z and D. The received
    // mixture is never detached: the task loss must reach the relation logits.
    torch::Tensor middle_values() const;
    // T as downloaded at the start of the round (D = 0), without gradient.
    torch::Tensor downloaded_values() const;
    // Middle matrix of (layer, module) shaped r x r from `values` ([L_k, M, r^2]).
    torch::Tensor middle_matrix(const torch::Tensor& values, int64_t layer, int64_t module) const;

    // Proximal term: mean over (l, m) of KL(softmax(vec T_dl) || softmax(vec T)).
    torch::Tensor proximal_kl(const torch::Tensor& values) const;

    // Replaces the masks at a round boundary (rank 0 re-selected them, mask_refresh): [M, r^2],
    // strictly ascending rows in [0, R*R). T's positions now read other entries; D restarts at
    // zero with the next begin_round and the Taylor statistics restart here.
    void set_masks(const torch::Tensor& masks);

    // First-order Taylor statistics of the entries in the mask (mask_score = taylor): call after a
    // backward pass through middle_values() `values`; dL/dT is the gradient of D.
    void accumulate_taylor(const torch::Tensor& values);
    const TaylorScore& taylor() const { return taylor_; }
    TaylorScore& taylor() { return taylor_; }

    // State for checkpoints: relation logits, masks, residual and the round's received slices.
    void load_state(const torch::Tensor& z, const torch::Tensor& masks, const torch::Tensor& residual,
                    const torch::Tensor& slices);

private:
    SharedMiddleOptions options_;
    torch::Tensor masks_;   // [M, r^2]
    torch::Tensor z_;       // [L_g, L_k] (requires grad when align = relation)
    torch::Tensor fixed_;   // [L_g, L_k] relation for align = end (Z unused)
    torch::Tensor d_;       // [L_k, M, r^2], trainable
    torch::Tensor slices_;  // [L_g, M, r^2], received, fixed
    TaylorScore taylor_;
};

}  // namespace h2tune
