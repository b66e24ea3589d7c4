// Rank 0's side of H2Tune: the global bank G [L_g, M, R*R] and one slot per client holding what
// rank 0 knows of it (its masks, its latest relation and Taylor statistics, what it is owed this
// round). Validates uploads (returning why one is refused), aggregates the accepted ones in client
// order, re-selects masks (mask_refresh) and saves/restores its state. No MPI, no HDF5.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "h2tune/method/sparse_bank.h"

namespace h2tune {

using TensorMap = std::map<std::string, torch::Tensor>;

struct H2TuneClientSlot {
    torch::Tensor masks;       // [M, r_k^2] int64 (undefined: not announced)
    std::string mask_error;    // why its announced masks are unusable ("" = usable)
    double mask_bytes = 0;     // bytes of its mask announcement (counted in round 0's upload)
    torch::Tensor relation;    // Pi_k [L_g, L_k] of its last accepted upload (undefined: none yet)
    torch::Tensor taylor;      // Taylor scores [M, r_k^2] of its last upload that carried them
    torch::Tensor grad_scale;  // mean |dL/dT| per module [M], same upload
    torch::Tensor new_masks;   // re-selected at the start of this round (undefined: unchanged)
    double mask_changed = 0;   // share of its mask entries replaced this round
};

// What a client receives at the start of a round.
struct BankDownload {
    torch::Tensor new_masks;  // [M, r_k^2] int64 when rank 0 re-selected them, else undefined
    torch::Tensor values;     // G[:, m, Omega_k^m] [L_g, M, r_k^2]; dense: the whole bank [L_g, M, R*R]
};

// A client's upload as decoded: `values` are [L_k, M, r_k^2], or with a dense exchange the
// personalised R x R matrices [L_k, M, R*R] (only its mask entries are its T).
struct BankUpload {
    int client = -1;
    double samples = 0;
    int64_t rank = 0;
    torch::Tensor relation;    // [L_g, L_k]
    torch::Tensor values;
    torch::Tensor taylor;      // [M, r_k^2], undefined when not sent
    torch::Tensor grad_scale;  // [M]
};

class H2TuneServer {
public:
    H2TuneServer() = default;
    // `dense`: h2tune-dense (whole bank down, whole matrices up); `max_abs_value`: refuse uploads
    // with a larger |value| (0 = no limit).
    H2TuneServer(BankShape shape, size_t clients, bool dense, double max_abs_value);

    const BankShape& shape() const { return shape_; }
    bool dense() const { return dense_; }
    const torch::Tensor& bank() const { return bank_; }
    const H2TuneClientSlot& slot(size_t client) const { return slots_.at(client); }

    // Once at start: client k's masks as announced, and the bytes the announcement took.
    void announce_masks(size_t client, torch::Tensor masks, double bytes);
    // Start of every round: when `mask_refresh_due(every, round)`, re-selects the masks of every
    // participating client rank 0 has a relation for, from |M_k| or (taylor_score) the Taylor
    // score (method/mask_refresh.h); the changed ones go out with the download. Clears last
    // round's new masks and mask_changed either way.
    void refresh_masks(int round, int64_t every, bool taylor_score, const std::vector<bool>& participating);
    // Whether client k is sent anything (its announced masks are usable).
    bool delivers_to(size_t client) const { return slots_.at(client).mask_error.empty(); }
    BankDownload download_for(size_t client) const;
    // Validates `u` against its client's slot and the bank; when usable stores its relation and
    // Taylor statistics and queues it for aggregate(). Returns "" or why it was refused.
    std::string accept(BankUpload u);
    // Aggregates the queued uploads in client order (fixed reduction order) and empties the queue.
    void aggregate();

    // Checkpoint state: "bank", "masks/<k>", "relations/<k>", "taylor/<k>", "grad_scale/<k>",
    // "mask_changed", "mask_bytes".
    TensorMap state() const;
    void load_state(const TensorMap& state);

private:
    BankShape shape_;
    torch::Tensor bank_;
    bool dense_ = false;
    double max_abs_value_ = 0;
    std::vector<H2TuneClientSlot> slots_;
    std::vector<ClientUpload> queued_;
};

}  // namespace h2tune
