#include "h2tune/method/baselines.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <utility>

#include "h2tune/core/error.h"
#include "h2tune/core/shape_text.h"

namespace h2tune {

namespace {

// "client 3" when the caller gave ids, else the position in the group (what the caller can find).
std::string who(const LoraFactors& f, size_t position) {
    return f.client >= 0 ? "client " + std::to_string(f.client) : "client at position " + std::to_string(position);
}

[[noreturn]] void fail(const char* rule, const std::string& message) {
    throw ModelError(std::string(rule) + ": " + message);
}

// The checks every rule needs; `equal_ranks` for the rules that average A or B element-wise.
void validate_group(const char* rule, const std::vector<LoraFactors>& clients, bool equal_ranks) {
    if (clients.empty()) fail(rule, "no clients to aggregate");
    const LoraFactors& first = clients.front();
    for (size_t i = 0; i < clients.size(); ++i) {
        const LoraFactors& f = clients[i];
        const std::string name = who(f, i);
        if (!f.A.defined() || !f.B.defined()) fail(rule, name + " has no A or no B");
        if (f.A.dim() != 2 || f.B.dim() != 2)
            fail(rule, name + ": A and B must be matrices, got A " + shape_string(f.A.sizes()) + " and B " + shape_string(f.B.sizes()));
        if (!f.A.is_floating_point() || !f.B.is_floating_point())
            fail(rule, name + ": A and B must be floating point");
        if (f.A.size(0) < 1 || f.A.size(1) < 1 || f.B.size(0) < 1)
            fail(rule, name + ": empty factor, A " + shape_string(f.A.sizes()) + " and B " + shape_string(f.B.sizes()));
        if (f.B.size(1) != f.A.size(0))
            fail(rule, name + ": rank mismatch, A " + shape_string(f.A.sizes()) + " has " + std::to_string(f.A.size(0)) +
                           " rows but B " + shape_string(f.B.sizes()) + " has " + std::to_string(f.B.size(1)) + " columns");
        if (f.A.scalar_type() != f.B.scalar_type() || f.A.scalar_type() != first.A.scalar_type())
            fail(rule, name + ": dtype differs from the rest of the group (A " + std::string(c10::toString(f.A.scalar_type())) +
                           ", B " + c10::toString(f.B.scalar_type()) + ", group " + c10::toString(first.A.scalar_type()) + ")");
        if (f.A.device() != f.B.device() || f.A.device() != first.A.device())
            fail(rule, name + ": A and B must be on the same device as the rest of the group");
        if (f.A.size(1) != first.A.size(1))
            fail(rule, name + ": d_in " + std::to_string(f.A.size(1)) + " differs from the group's " +
                           std::to_string(first.A.size(1)) + " (clients of one group must share the architecture)");
        if (f.B.size(0) != first.B.size(0))
            fail(rule, name + ": d_out " + std::to_string(f.B.size(0)) + " differs from the group's " +
                           std::to_string(first.B.size(0)) + " (clients of one group must share the architecture)");
        if (equal_ranks && f.rank() != first.rank())
            fail(rule, name + " has rank " + std::to_string(f.rank()) + " but " + who(first, 0) + " has rank " +
                           std::to_string(first.rank()) + "; this rule needs equal ranks (group clients by shape)");
        if (!(f.samples > 0) || !std::isfinite(f.samples))
            fail(rule, name + ": sample count must be finite and positive, got " + std::to_string(f.samples));
        if (!(f.scale > 0) || !std::isfinite(f.scale))
            fail(rule, name + ": scale must be finite and positive, got " + std::to_string(f.scale));
        if (!torch::isfinite(f.A).all().item<bool>()) fail(rule, name + ": A contains NaN or Inf");
        if (!torch::isfinite(f.B).all().item<bool>()) fail(rule, name + ": B contains NaN or Inf");
    }
}

std::vector<double> weights_of(const std::vector<LoraFactors>& clients) {
    std::vector<double> samples;
    samples.reserve(clients.size());
    for (const LoraFactors& f : clients) samples.push_back(f.samples);
    return client_weights(samples);
}

// sum_k w_k x_k, accumulated left to right (the fixed reduction order).
torch::Tensor weighted_sum(const std::vector<torch::Tensor>& xs, const std::vector<double>& w) {
    torch::Tensor acc = torch::zeros_like(xs.front(), torch::MemoryFormat::Contiguous);
    for (size_t k = 0; k < xs.size(); ++k) acc.add_(xs[k], w[k]);
    return acc;
}

// A copy of `f` with new factors (samples, scale and id carried over).
LoraFactors with_factors(const LoraFactors& f, torch::Tensor A, torch::Tensor B) {
    LoraFactors out = f;
    out.A = std::move(A);
    out.B = std::move(B);
    return out;
}

torch::Tensor own_copy(const torch::Tensor& t) { return t.detach().clone(torch::MemoryFormat::Contiguous); }

// Zero rows below A, zero columns right of B, up to `rank`.
std::pair<torch::Tensor, torch::Tensor> pad_factors(const torch::Tensor& A, const torch::Tensor& B, int64_t rank) {
    const int64_t extra = rank - A.size(0);
    if (extra == 0) return {own_copy(A), own_copy(B)};
    return {torch::cat({A.detach(), torch::zeros({extra, A.size(1)}, A.options())}, 0),
            torch::cat({B.detach(), torch::zeros({B.size(0), extra}, B.options())}, 1)};
}

// sum_k p_k s_k B_k A_k for a validated group; addmm_ folds the weight into the product.
torch::Tensor average_update_unchecked(const std::vector<LoraFactors>& clients) {
    torch::NoGradGuard no_grad;
    const std::vector<double> p = weights_of(clients);
    const LoraFactors& first = clients.front();
    torch::Tensor acc = torch::zeros({first.B.size(0), first.A.size(1)}, first.A.options());
    for (size_t k = 0; k < clients.size(); ++k)
        acc.addmm_(clients[k].B.detach(), clients[k].A.detach(), /*beta=*/1, /*alpha=*/p[k] * clients[k].scale);
    return acc;
}

std::vector<double> hetlora_weights_unchecked(const std::vector<LoraFactors>& clients) {
    const std::vector<double> p = weights_of(clients);
    std::vector<double> w(clients.size());
    double total = 0;
    for (size_t k = 0; k < clients.size(); ++k) {
        w[k] = p[k] * lora_product_norm(clients[k].A, clients[k].B);
        total += w[k];
    }
    if (!std::isfinite(total)) fail("hetlora", "the norm-weighted total is not finite");
    // All updates zero (round one: LoRA starts with B = 0): the norms carry no information, so the
    // sample weights decide instead of a 0/0.
    if (total == 0) return p;
    for (double& x : w) x /= total;
    return w;
}

}  // namespace

std::vector<double> client_weights(const std::vector<double>& samples) {
    if (samples.empty()) throw ModelError("client_weights: no clients");
    double total = 0;
    for (size_t k = 0; k < samples.size(); ++k) {
        if (!(samples[k] > 0) || !std::isfinite(samples[k]))
            throw ModelError("client_weights: sample count of client at position " + std::to_string(k) +
                             " must be finite and positive, got " + std::to_string(samples[k]));
        total += samples[k];
    }
    if (!std::isfinite(total)) throw ModelError("client_weights: total sample count is not finite");
    std::vector<double> p(samples.size());
    for (size_t k = 0; k < samples.size(); ++k) p[k] = samples[k] / total;
    return p;
}

double lora_product_norm(const torch::Tensor& A, const torch::Tensor& B) {
    if (!A.defined() || !B.defined() || A.dim() != 2 || B.dim() != 2 || B.size(1) != A.size(0))
        throw ModelError("lora_product_norm: need A [r, d_in] and B [d_out, r], got A " +
                         (A.defined() ? shape_string(A.sizes()) : std::string("nothing")) + " and B " +
                         (B.defined() ? shape_string(B.sizes()) : std::string("nothing")));
    torch::NoGradGuard no_grad;
    const torch::Tensor a = A.detach().to(torch::kFloat64), b = B.detach().to(torch::kFloat64);
    const torch::Tensor gram_a = torch::mm(a, a.t());  // [r, r]
    const torch::Tensor gram_b = torch::mm(b.t(), b);  // [r, r]
    // Rounding can push a (near-)zero sum of squares slightly below zero.
    return std::sqrt(std::max(0.0, (gram_a * gram_b).sum().item<double>()));
}

torch::Tensor lora_update(const LoraFactors& f) {
    validate_group("lora_update", {f}, false);
    torch::NoGradGuard no_grad;
    return torch::mm(f.B.detach(), f.A.detach()).mul_(f.scale);
}

torch::Tensor average_update(const std::vector<LoraFactors>& clients) {
    validate_group("average_update", clients, false);
    return average_update_unchecked(clients);
}

LoraFactors pad_to_rank(const LoraFactors& f, int64_t rank) {
    validate_group("pad_to_rank", {f}, false);
    if (rank < f.rank())
        fail("pad_to_rank", "cannot pad rank " + std::to_string(f.rank()) + " down to " + std::to_string(rank));
    torch::NoGradGuard no_grad;
    auto [A, B] = pad_factors(f.A, f.B, rank);
    return with_factors(f, std::move(A), std::move(B));
}

LoraFactors truncate_to_rank(const LoraFactors& f, int64_t rank) {
    validate_group("truncate_to_rank", {f}, false);
    if (rank < 1 || rank > f.rank())
        fail("truncate_to_rank", "cannot truncate rank " + std::to_string(f.rank()) + " to " + std::to_string(rank));
    torch::NoGradGuard no_grad;
    return with_factors(f, own_copy(f.A.narrow(0, 0, rank)), own_copy(f.B.narrow(1, 0, rank)));
}

namespace {

// FedAvg of the chosen factors over a validated group of identical shapes (FedIT: both, FFA-LoRA:
// B, FedSA-LoRA: A); a factor not averaged stays each client's own.
enum class Averaged { A, B, both };

std::vector<LoraFactors> average_factors(const std::vector<LoraFactors>& clients, Averaged which) {
    const bool average_A = which != Averaged::B, average_B = which != Averaged::A;
    torch::NoGradGuard no_grad;
    const std::vector<double> p = weights_of(clients);
    const auto mean_of = [&](torch::Tensor LoraFactors::*factor) {
        std::vector<torch::Tensor> xs;
        xs.reserve(clients.size());
        for (const LoraFactors& f : clients) xs.push_back((f.*factor).detach());
        return weighted_sum(xs, p);
    };
    const torch::Tensor A = average_A ? mean_of(&LoraFactors::A) : torch::Tensor();
    const torch::Tensor B = average_B ? mean_of(&LoraFactors::B) : torch::Tensor();
    std::vector<LoraFactors> out;
    out.reserve(clients.size());
    for (const LoraFactors& f : clients)
        out.push_back(with_factors(f, average_A ? A.clone() : own_copy(f.A), average_B ? B.clone() : own_copy(f.B)));
    return out;
}

}  // namespace

std::vector<LoraFactors> aggregate_fedit(const std::vector<LoraFactors>& clients) {
    validate_group("fedit", clients, true);
    return average_factors(clients, Averaged::both);
}

std::vector<LoraFactors> aggregate_ffa(const std::vector<LoraFactors>& clients) {
    validate_group("ffa", clients, true);
    // FFA-LoRA's premise: A is frozen at a seed all clients share, so the mean of the updates is
    // (sum p_k B_k) A. If the A's differ (e.g. one client initialised its A on another device's RNG),
    // averaging B would silently compute something else.
    for (size_t i = 1; i < clients.size(); ++i)
        if (!torch::equal(clients[i].A, clients.front().A))
            fail("ffa", who(clients[i], i) + " holds a different frozen A than " + who(clients.front(), 0) +
                            " (FFA-LoRA needs A from one shared seed)");
    return average_factors(clients, Averaged::B);
}

std::vector<LoraFactors> aggregate_fedsa(const std::vector<LoraFactors>& clients) {
    validate_group("fedsa", clients, true);
    return average_factors(clients, Averaged::A);
}

std::vector<double> hetlora_weights(const std::vector<LoraFactors>& clients) {
    validate_group("hetlora", clients, false);
    return hetlora_weights_unchecked(clients);
}

std::vector<LoraFactors> aggregate_hetlora(const std::vector<LoraFactors>& clients) {
    validate_group("hetlora", clients, false);
    torch::NoGradGuard no_grad;
    const std::vector<double> w = hetlora_weights_unchecked(clients);
    int64_t max_rank = 0;
    for (const LoraFactors& f : clients) max_rank = std::max(max_rank, f.rank());
    std::vector<torch::Tensor> As, Bs;
    for (const LoraFactors& f : clients) {
        auto [A, B] = pad_factors(f.A, f.B, max_rank);
        As.push_back(std::move(A));
        Bs.push_back(std::move(B));
    }
    const torch::Tensor A = weighted_sum(As, w), B = weighted_sum(Bs, w);
    std::vector<LoraFactors> out;
    out.reserve(clients.size());
    for (const LoraFactors& f : clients)
        out.push_back(with_factors(f, own_copy(A.narrow(0, 0, f.rank())), own_copy(B.narrow(1, 0, f.rank()))));
    return out;
}

std::vector<LoraFactors> aggregate_flexlora(const std::vector<LoraFactors>& clients) {
    validate_group("flexlora", clients, false);
    torch::NoGradGuard no_grad;
    const torch::Tensor dw = average_update_unchecked(clients);
    // Thin SVD: U [d_out, q], S [q], Vh [q, d_in], q = min(d_out, d_in), S descending.
    const auto [U, S, Vh] = torch::linalg_svd(dw, /*full_matrices=*/false);
    const int64_t q = S.size(0);
    std::vector<LoraFactors> out;
    out.reserve(clients.size());
    for (const LoraFactors& f : clients) {
        const int64_t r = std::min(f.rank(), q);
        const double inv_sqrt_scale = 1.0 / std::sqrt(f.scale);
        const torch::Tensor root = S.narrow(0, 0, r).sqrt();                                     // [r]
        const torch::Tensor B = (U.narrow(1, 0, r) * root.unsqueeze(0)).mul_(inv_sqrt_scale);    // [d_out, r]
        const torch::Tensor A = (root.unsqueeze(1) * Vh.narrow(0, 0, r)).mul_(inv_sqrt_scale);   // [r, d_in]
        // r_k > min(d_out, d_in): Delta W has no more directions; the extra rank stays zero.
        auto [A_full, B_full] = pad_factors(A, B, f.rank());
        out.push_back(with_factors(f, std::move(A_full), std::move(B_full)));
    }
    return out;
}

FloraStack flora_stack(const std::vector<LoraFactors>& clients) {
    validate_group("flora", clients, false);
    torch::NoGradGuard no_grad;
    const std::vector<double> p = weights_of(clients);
    std::vector<torch::Tensor> As, Bs;
    for (size_t k = 0; k < clients.size(); ++k) {
        As.push_back(clients[k].A.detach());
        Bs.push_back(clients[k].B.detach() * (p[k] * clients[k].scale));
    }
    return FloraStack{torch::cat(As, 0), torch::cat(Bs, 1)};
}

torch::Tensor flora_merged_update(const std::vector<LoraFactors>& clients) {
    const FloraStack stack = flora_stack(clients);
    torch::NoGradGuard no_grad;
    return torch::mm(stack.B, stack.A);
}

}  // namespace h2tune
