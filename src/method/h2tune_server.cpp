#include "h2tune/method/h2tune_server.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "h2tune/core/error.h"
#include "h2tune/method/alignment.h"
#include "h2tune/method/mask_refresh.h"

namespace h2tune {

namespace {

// Mask re-selection from the bank and the client's relation (plus its Taylor statistics).
torch::Tensor reselected_masks(const torch::Tensor& bank, const H2TuneClientSlot& slot, const BankShape& shape,
                               bool taylor_score) {
    const auto rank = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(slot.masks.size(1)))));
    torch::Tensor scores = magnitude_mask_scores(bank, slot.relation);
    if (taylor_score && slot.taylor.defined())
        scores = taylor_mask_scores(scores, slot.masks, slot.taylor, slot.grad_scale);
    std::vector<torch::Tensor> rows;
    for (int64_t m = 0; m < shape.modules; ++m) rows.push_back(select_mask(scores[m], rank, shape.max_rank, "topk"));
    return torch::stack(rows);
}

// Share of the entries of `fresh` that `old` did not hold, through a membership map per module.
double replaced_share(const torch::Tensor& old, const torch::Tensor& fresh, int64_t max_rank) {
    torch::Tensor member = torch::zeros({old.size(0), max_rank * max_rank}, torch::kBool);
    member.scatter_(1, old, true);
    const double kept = member.gather(1, fresh).sum().item<double>();
    return 1.0 - kept / static_cast<double>(fresh.numel());
}

}  // namespace

H2TuneServer::H2TuneServer(BankShape shape, size_t clients, bool dense, double max_abs_value)
    : shape_(shape), bank_(bank_zeros(shape)), dense_(dense), max_abs_value_(max_abs_value), slots_(clients) {}

void H2TuneServer::announce_masks(size_t client, torch::Tensor masks, double bytes) {
    H2TuneClientSlot& s = slots_.at(client);
    s = H2TuneClientSlot{};
    s.mask_error = validate_mask_indices(masks, shape_.max_rank);
    s.masks = std::move(masks);
    s.mask_bytes = bytes;
}

void H2TuneServer::refresh_masks(int round, int64_t every, bool taylor_score, const std::vector<bool>& participating) {
    for (auto& s : slots_) {
        s.new_masks = torch::Tensor();
        s.mask_changed = 0.0;
    }
    if (!mask_refresh_due(every, round)) return;
    for (size_t k = 0; k < slots_.size(); ++k) {
        H2TuneClientSlot& s = slots_[k];
        // A client never heard from (excluded every round so far) keeps its mask: rank 0 has no Pi_k.
        if (!participating[k] || !s.mask_error.empty() || !s.relation.defined()) continue;
        torch::Tensor fresh = reselected_masks(bank_, s, shape_, taylor_score);
        if (torch::equal(fresh, s.masks)) continue;
        s.mask_changed = replaced_share(s.masks, fresh, shape_.max_rank);
        s.masks = fresh;
        s.new_masks = fresh;
        s.taylor = torch::Tensor();  // measured on the old positions
        s.grad_scale = torch::Tensor();
    }
}

BankDownload H2TuneServer::download_for(size_t client) const {
    const H2TuneClientSlot& s = slots_.at(client);
    // h2tune-dense: the whole bank travels, as in the reference implementation.
    return BankDownload{s.new_masks, dense_ ? bank_ : bank_gather(bank_, s.masks)};
}

std::string H2TuneServer::accept(BankUpload u) {
    H2TuneClientSlot& s = slots_.at(static_cast<size_t>(u.client));
    if (!s.mask_error.empty()) return s.mask_error;
    if (u.rank * u.rank != s.masks.size(1))
        return "claims rank " + std::to_string(u.rank) + " but announced masks of " + std::to_string(s.masks.size(1)) +
               " entries";
    ClientUpload c;
    c.client = u.client;
    c.samples = u.samples;
    c.rank = u.rank;
    c.layers = u.relation.size(1);
    c.mask = s.masks;
    c.relation = u.relation;
    // Dense: the personalised R x R matrices; only the client's mask entries are its T.
    c.values = dense_ ? u.values.gather(2, s.masks.unsqueeze(0).expand({c.layers, -1, -1}).contiguous()) : u.values;
    if (u.taylor.defined() &&
        (!torch::isfinite(u.taylor).all().item<bool>() || !torch::isfinite(u.grad_scale).all().item<bool>() ||
         (u.taylor < 0).any().item<bool>() || (u.grad_scale < 0).any().item<bool>()))
        return "Taylor scores must be finite and non-negative";
    std::string why = validate_upload(c, shape_);
    if (why.empty()) why = exceeding_values(c.values, max_abs_value_);
    if (!why.empty()) return why;
    s.relation = c.relation;
    if (u.taylor.defined()) {
        s.taylor = u.taylor;
        s.grad_scale = u.grad_scale;
    }
    queued_.push_back(std::move(c));
    return "";
}

void H2TuneServer::aggregate() {
    std::sort(queued_.begin(), queued_.end(), [](const ClientUpload& a, const ClientUpload& b) { return a.client < b.client; });
    std::vector<const ClientUpload*> uploads;
    for (const auto& u : queued_) uploads.push_back(&u);
    aggregate_sparse(bank_, uploads);
    queued_.clear();
}

TensorMap H2TuneServer::state() const {
    TensorMap out;
    out["bank"] = bank_;
    std::vector<double> changed, bytes;
    for (size_t k = 0; k < slots_.size(); ++k) {
        const H2TuneClientSlot& s = slots_[k];
        const std::string n = std::to_string(k);
        if (s.masks.defined()) out["masks/" + n] = s.masks;
        if (s.relation.defined()) out["relations/" + n] = s.relation;
        if (s.taylor.defined()) out["taylor/" + n] = s.taylor;
        if (s.grad_scale.defined()) out["grad_scale/" + n] = s.grad_scale;
        changed.push_back(s.mask_changed);
        bytes.push_back(s.mask_bytes);
    }
    out["mask_changed"] = torch::tensor(changed, torch::kFloat64);
    out["mask_bytes"] = torch::tensor(bytes, torch::kFloat64);
    return out;
}

void H2TuneServer::load_state(const TensorMap& state) {
    auto get = [&](const std::string& key) {
        auto it = state.find(key);
        return it == state.end() ? torch::Tensor() : it->second;
    };
    torch::Tensor bank = get("bank");
    if (!bank.defined() || !bank.sizes().equals(bank_.sizes()))
        throw ModelError("server state: the bank is missing or has the wrong shape");
    const size_t K = slots_.size();
    auto column = [&](const std::string& key) {
        torch::Tensor t = get(key);
        if (!t.defined() || t.numel() != static_cast<int64_t>(K)) throw ModelError("server state: bad '" + key + "'");
        t = t.to(torch::kFloat64).contiguous();
        return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + K);
    };
    const std::vector<double> changed = column("mask_changed"), bytes = column("mask_bytes");
    bank_ = bank.to(torch::kFloat32);
    for (size_t k = 0; k < K; ++k) {
        const std::string n = std::to_string(k);
        torch::Tensor m = get("masks/" + n);
        if (!m.defined()) throw ModelError("server state: no masks for client " + n);
        H2TuneClientSlot& s = slots_[k];
        s = H2TuneClientSlot{};
        s.masks = m.to(torch::kInt64);
        s.mask_error = validate_mask_indices(s.masks, shape_.max_rank);
        s.relation = get("relations/" + n);
        s.taylor = get("taylor/" + n);
        s.grad_scale = get("grad_scale/" + n);
        s.mask_changed = changed[k];
        s.mask_bytes = bytes[k];
    }
    queued_.clear();
}

}  // namespace h2tune
