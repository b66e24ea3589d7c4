#include "h2tune/method/sparse_bank.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#include "h2tune/core/error.h"
#include "h2tune/core/shape_text.h"

namespace h2tune {

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
               (u.mask.defined() ? shape_string(u.mask.sizes()) : "nothing");
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
               std::to_string(n) + "], got " + (u.values.defined() ? shape_string(u.values.sizes()) : "nothing");
    if (!torch::isfinite(u.values).all().item<bool>()) return "values contain NaN or Inf";
    return "";
}

// ---------------------------------------------------------------- aggregate_sparse
//
// Written for time in proportion to what the clients sent (bench/bench_aggregation.cpp): no tensor
// operation per client or module type, one streaming pass over each upload's values and mask.
//
// The flat entry space f = m R^2 + e (F = M R^2 entries per slot) is cut into parts, one per thread,
// and each part into chunks whose accumulator fits in L2. Per chunk, the uploads are added in the
// order given, each through a cursor into its mask rows (masks are strictly ascending, so a chunk is
// a contiguous run of every row). Numerator and denominator of entry f live side by side,
// acc[f] = {numerator[0..L_g), denominator[0..L_g)} (one 64-byte cache line at L_g = 8); a bitmap
// marks the entries some mask covers, which start from the first contribution instead of from a
// cleared accumulator, and only those are divided out into the bank. Each thread writes only the
// entries of its own part, so the result does not depend on the number of threads.

namespace {

// One upload as raw arrays.
struct UploadView {
    const float* values = nullptr;  // [L_k, M, n]
    const int64_t* mask = nullptr;  // [M, n]
    int64_t layers = 0, n = 0;
    const float* weight = nullptr;    // [L_k, L_g]: n_k Pi[j, l], stored transposed (slot j fastest)
    const float* coverage = nullptr;  // [L_g]: sum_l n_k Pi[j, l]
    torch::Tensor values_hold, mask_hold;  // contiguous copies when the upload's tensors are not
};

// Buffers kept by the calling thread from one call to the next (no allocation, and no page
// faults, in a steady state of rounds): the accumulator and the coverage bitmap.
struct Scratch {
    std::unique_ptr<float, void (*)(void*)> acc{nullptr, std::free};
    size_t acc_floats = 0;
    std::vector<uint64_t> bits;

    float* accumulator(size_t floats) {
        if (floats > acc_floats) {
            const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;  // 64-byte aligned lines
            acc.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
            if (!acc) {
                acc_floats = 0;
                throw std::bad_alloc();
            }
            acc_floats = floats;
        }
        return acc.get();
    }
};

struct Problem {
    int64_t lg = 0, M = 0, R2 = 0, F = 0;
    const std::vector<UploadView>* views = nullptr;
    float* acc = nullptr;    // [F][2][L_g]
    uint64_t* bits = nullptr;  // [F / 64] (rounded up)
};

// The entries [f_lo, f_hi) of every slot (f_lo, f_hi multiples of 64 but the last) and, per
// (upload k, module m), where its mask cursor started and ended in this part.
struct Part {
    int64_t f_lo = 0, f_hi = 0;
    std::vector<int64_t> start, end;  // [K * M]
    int64_t bad = -1;                 // first upload whose mask is not strictly ascending here
};

// Accumulator bytes per chunk: 512 KiB = 8192 entries at L_g = 8, half of a core's L2 on the
// benchmark machine (docs/performance.md).
constexpr int64_t kChunkBytes = 512 * 1024;

#if defined(__GNUC__)
#define H2TUNE_ALWAYS_INLINE inline __attribute__((always_inline))
#define H2TUNE_LAMBDA_INLINE __attribute__((always_inline))
#define H2TUNE_UNROLL _Pragma("GCC unroll 8")
#else
#define H2TUNE_ALWAYS_INLINE inline
#define H2TUNE_LAMBDA_INLINE
#define H2TUNE_UNROLL
#endif

// One upload's entries of one module type inside a chunk: mask positions e.. while idx[e] < i_hi.
struct Run {
    const int64_t* idx;  // the mask row
    const float* v;      // T[0, m, :]; layer l at v + l * layer_stride
    const float* w;      // [L_k, L_g]
    const float* cov;    // [L_g]
    float* mix;          // [L_g] scratch
    float* base;         // the accumulator of entry (m, 0)
    uint64_t* bits;
    int64_t n, layers, layer_stride, lg, f_base, i_hi;
    int64_t e, last;     // cursor and last index seen, updated
};

// Adds the run's entries; false when the mask row does not rise strictly. LK > 0 fixes L_k.
template <int LG, int LK>
H2TUNE_ALWAYS_INLINE bool add_run(Run& r) {
    const int64_t lg = LG > 0 ? LG : r.lg, layers = LK > 0 ? LK : r.layers, cell_floats = 2 * lg;
    const int64_t* __restrict idx = r.idx;
    const float* __restrict v = r.v;
    const float* __restrict w = r.w;
    const float* __restrict cov = r.cov;
    float* __restrict mix = r.mix;
    float* __restrict base = r.base;
    uint64_t* __restrict bits = r.bits;
    const int64_t n = r.n, stride = r.layer_stride, i_hi = r.i_hi, f_base = r.f_base;
    int64_t e = r.e, last = r.last;
    bool ok = true;
    // sum_l w[:, l] T[l, m, e] for entry e: a chain of fused multiply-adds in l order.
    auto mix_of = [&](int64_t at, float* out) H2TUNE_LAMBDA_INLINE {
        const float x0 = v[at];
        H2TUNE_UNROLL for (int64_t j = 0; j < lg; ++j) out[j] = w[j] * x0;
        H2TUNE_UNROLL for (int64_t l = 1; l < layers; ++l) {
            const float x = v[l * stride + at];
            const float* __restrict wl = w + l * lg;
            H2TUNE_UNROLL for (int64_t j = 0; j < lg; ++j) out[j] = std::fma(wl[j], x, out[j]);
        }
    };
    auto add_entry = [&](int64_t i, const float* m) H2TUNE_LAMBDA_INLINE {
        float* __restrict cell = base + i * cell_floats;
        const int64_t f = f_base + i;
        uint64_t& word = bits[f >> 6];
        const uint64_t bit = uint64_t{1} << (f & 63);
        if (word & bit) {
            H2TUNE_UNROLL for (int64_t j = 0; j < lg; ++j) cell[j] += m[j];
            H2TUNE_UNROLL for (int64_t j = 0; j < lg; ++j) cell[lg + j] += cov[j];
        } else {
            word |= bit;
            // 0 + x, exactly what a cleared accumulator would hold (-0 becomes +0).
            H2TUNE_UNROLL for (int64_t j = 0; j < lg; ++j) cell[j] = 0.0f + m[j];
            H2TUNE_UNROLL for (int64_t j = 0; j < lg; ++j) cell[lg + j] = 0.0f + cov[j];
        }
    };
    if (LG > 0) {
        // Four entries at a time: four independent chains keep the FMA units busy (one chain is
        // bound by the FMA latency).
        alignas(32) float block[4][LG > 0 ? LG : 1];
        while (e + 4 <= n) {
            const int64_t i0 = idx[e], i1 = idx[e + 1], i2 = idx[e + 2], i3 = idx[e + 3];
            if (i3 >= i_hi) break;
            if (!(i0 > last && i1 > i0 && i2 > i1 && i3 > i2)) return r.e = e, r.last = last, false;
            mix_of(e, block[0]);
            mix_of(e + 1, block[1]);
            mix_of(e + 2, block[2]);
            mix_of(e + 3, block[3]);
            add_entry(i0, block[0]);
            add_entry(i1, block[1]);
            add_entry(i2, block[2]);
            add_entry(i3, block[3]);
            e += 4;
            last = i3;
        }
    }
    for (; e < n; ++e) {
        const int64_t i = idx[e];
        if (i >= i_hi) break;
        if (i <= last) {
            ok = false;
            break;
        }
        last = i;
        mix_of(e, mix);
        add_entry(i, mix);
    }
    r.e = e;
    r.last = last;
    return ok;
}

// Adds every upload's contribution to the entries of `part`:
//   numerator[f][j]   += sum_l w[j, l] T[l, m, e]      (f = m R^2 + mask[m][e])
//   denominator[f][j] += coverage[j]
// starting from 0 at the first contribution. The sum over l is a chain of fused multiply-adds in
// l order starting from w[j, 0] T[0, m, e]. LG > 0 fixes L_g at compile time (8: the common case).
template <int LG>
H2TUNE_ALWAYS_INLINE void accumulate_part(const Problem& p, Part& part) {
    const std::vector<UploadView>& views = *p.views;
    const int64_t K = static_cast<int64_t>(views.size()), M = p.M, R2 = p.R2;
    const int64_t lg = LG > 0 ? LG : p.lg, cell_floats = 2 * lg;
    alignas(32) float local[LG > 0 ? 2 * LG : 1];
    std::vector<float> heap(LG > 0 ? 0 : static_cast<size_t>(2 * lg));
    float* __restrict mix = LG > 0 ? local : heap.data();
    float* __restrict cov = mix + lg;

    // Cursors: the first mask position at or after the part's start, in every (k, m) row; `prev`
    // is the last index seen (rows must rise strictly, and start inside the part).
    std::vector<int64_t> cursor(static_cast<size_t>(K * M)), prev(static_cast<size_t>(K * M));
    for (int64_t k = 0; k < K; ++k)
        for (int64_t m = 0; m < M; ++m) {
            const UploadView& u = views[static_cast<size_t>(k)];
            const int64_t lo = std::clamp<int64_t>(part.f_lo - m * R2, 0, R2);
            const int64_t* row = u.mask + m * u.n;
            const auto km = static_cast<size_t>(k * M + m);
            cursor[km] = part.f_lo == 0 ? 0 : std::lower_bound(row, row + u.n, lo) - row;
            prev[km] = lo - 1;
        }
    part.start = cursor;
    std::fill(p.bits + part.f_lo / 64, p.bits + (part.f_hi + 63) / 64, uint64_t{0});

    const int64_t chunk = std::max<int64_t>(64, kChunkBytes / static_cast<int64_t>(sizeof(float) * cell_floats) / 64 * 64);
    for (int64_t c_lo = part.f_lo; c_lo < part.f_hi; c_lo += chunk) {
        const int64_t c_hi = std::min(c_lo + chunk, part.f_hi);
        for (int64_t m = c_lo / R2; m < M && m * R2 < c_hi; ++m) {
            const int64_t i_hi = std::min(c_hi - m * R2, R2);
            float* __restrict base = p.acc + m * R2 * cell_floats;
            const int64_t f_base = m * R2;
            for (int64_t k = 0; k < K; ++k) {
                const UploadView& u = views[static_cast<size_t>(k)];
                const auto km = static_cast<size_t>(k * M + m);
                const int64_t n = u.n, layers = u.layers, layer_stride = M * n;
                for (int64_t j = 0; j < lg; ++j) cov[j] = u.coverage[j];
                Run run{u.mask + m * n, u.values + m * n, u.weight, cov, mix, base, p.bits,
                        n, layers, layer_stride, lg, f_base, i_hi, cursor[km], prev[km]};
                bool ok = true;
                if (LG > 0) {
                    switch (layers) {  // the layer loop unrolled for the common layer counts
                        case 1: ok = add_run<LG, 1>(run); break;
                        case 2: ok = add_run<LG, 2>(run); break;
                        case 3: ok = add_run<LG, 3>(run); break;
                        case 4: ok = add_run<LG, 4>(run); break;
                        case 5: ok = add_run<LG, 5>(run); break;
                        case 6: ok = add_run<LG, 6>(run); break;
                        case 7: ok = add_run<LG, 7>(run); break;
                        case 8: ok = add_run<LG, 8>(run); break;
                        default: ok = add_run<LG, 0>(run); break;
                    }
                } else {
                    ok = add_run<LG, 0>(run);
                }
                if (!ok) {
                    part.bad = k;
                    return;
                }
                cursor[km] = run.e;
                prev[km] = run.last;
            }
        }
    }
    part.end = cursor;
}

// Compiled twice: with AVX2 + FMA (fused multiply-add in hardware, 8 slots per vector) and for the
// baseline ISA (std::fma from libm: the same numbers, slower); the first runs where the CPU has
// FMA. Both round identically, so the bank does not depend on the CPU.
#if defined(__GNUC__) && defined(__x86_64__)
#define H2TUNE_HAVE_FMA_CLONE 1
__attribute__((target("avx2,fma"))) void accumulate_part_fma(const Problem& p, Part& part) {
    if (p.lg == 8)
        accumulate_part<8>(p, part);
    else
        accumulate_part<0>(p, part);
}
#endif
void accumulate_part_generic(const Problem& p, Part& part) {
    if (p.lg == 8)
        accumulate_part<8>(p, part);
    else
        accumulate_part<0>(p, part);
}

void accumulate_part_any(const Problem& p, Part& part) {
#ifdef H2TUNE_HAVE_FMA_CLONE
    static const bool has_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (has_fma) return accumulate_part_fma(p, part);
#endif
    accumulate_part_generic(p, part);
}

// bank[j, f] = numerator / denominator for the covered entries of the part.
void finish_part(const Problem& p, const Part& part, float* bank) {
    const int64_t lg = p.lg, cell_floats = 2 * lg, F = p.F;
    for (int64_t word = part.f_lo / 64; word < (part.f_hi + 63) / 64; ++word)
        for (uint64_t b = p.bits[word]; b != 0; b &= b - 1) {
            const int64_t f = word * 64 + __builtin_ctzll(b);
            const float* c = p.acc + f * cell_floats;
            for (int64_t j = 0; j < lg; ++j)
                if (c[lg + j] > 0) bank[j * F + f] = c[j] / std::max(c[lg + j], 1e-30f);
        }
}

// fn(0) .. fn(T - 1), fn(0) on the calling thread; the first exception is rethrown after all ended.
template <typename Fn>
void run_parts(int64_t T, Fn fn) {
    std::vector<std::exception_ptr> errors(static_cast<size_t>(T));
    std::vector<std::thread> threads;
    int64_t started = 1;
    try {
        for (; started < T; ++started)
            threads.emplace_back([&errors, &fn, started] {
                try {
                    fn(started);
                } catch (...) {
                    errors[static_cast<size_t>(started)] = std::current_exception();
                }
            });
    } catch (...) {
        // No thread to be had: the calling thread does the rest.
    }
    try {
        fn(0);
        for (int64_t t = started; t < T; ++t) fn(t);
    } catch (...) {
        errors[0] = std::current_exception();
    }
    for (auto& th : threads) th.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

// Below this many covered entries per thread, one thread does it all (thread start-up and the
// cursors' binary searches cost more than they save).
constexpr int64_t kMinEntriesPerThread = int64_t{1} << 17;

}  // namespace

void aggregate_sparse(torch::Tensor& bank, const std::vector<const ClientUpload*>& uploads) {
    torch::NoGradGuard no_grad;
    if (!bank.defined() || bank.dim() != 3) throw DataError("aggregate_sparse: the bank must be [L_g, M, R*R]");
    const int64_t Lg = bank.size(0), M = bank.size(1), R2 = bank.size(2), F = M * R2;
    const int64_t K = static_cast<int64_t>(uploads.size());

    // No tensor operation per upload (they cost microseconds each, as much as a small upload's
    // whole share of the work): raw pointers to contiguous data, copies only where it is not.
    std::vector<UploadView> views(uploads.size());
    size_t coefficients = 0;
    for (const ClientUpload* u : uploads)
        coefficients += static_cast<size_t>((u->relation.defined() && u->relation.dim() == 2 ? u->relation.size(1) : 0) + 1) *
                        static_cast<size_t>(Lg);
    std::vector<float> coeff(coefficients);  // every upload's weight, then coverage
    float* next_coeff = coeff.data();
    int64_t touched = 0;  // sum over uploads of M * n
    for (size_t k = 0; k < uploads.size(); ++k) {
        const ClientUpload& u = *uploads[k];
        UploadView& v = views[k];
        const int64_t n = u.mask.defined() && u.mask.dim() == 2 ? u.mask.size(1) : -1;
        v.layers = u.relation.defined() && u.relation.dim() == 2 ? u.relation.size(1) : -1;
        if (n < 0 || u.mask.size(0) != M || u.mask.scalar_type() != torch::kInt64 || v.layers < 1 ||
            u.relation.size(0) != Lg || !u.values.defined() || u.values.dim() != 3 || u.values.size(0) != v.layers ||
            u.values.size(1) != M || u.values.size(2) != n || u.values.scalar_type() != torch::kFloat32)
            throw DataError("aggregate_sparse: the upload of client " + std::to_string(u.client) +
                            " does not match the bank (validate_upload first)");
        v.n = n;
        if (!u.values.is_contiguous()) v.values_hold = u.values.contiguous();
        if (!u.mask.is_contiguous()) v.mask_hold = u.mask.contiguous();
        v.values = (v.values_hold.defined() ? v.values_hold : u.values).data_ptr<float>();
        v.mask = (v.mask_hold.defined() ? v.mask_hold : u.mask).data_ptr<int64_t>();
        // w = relation * n_k and coverage = sum_l w (in l order), in float.
        torch::Tensor rel_hold;
        if (u.relation.scalar_type() != torch::kFloat32 || !u.relation.is_contiguous())
            rel_hold = u.relation.to(torch::kFloat32).contiguous();
        const float* rel = (rel_hold.defined() ? rel_hold : u.relation).data_ptr<float>();
        const float samples = static_cast<float>(u.samples);
        float* weight = next_coeff;
        float* coverage = next_coeff + v.layers * Lg;
        next_coeff = coverage + Lg;
        for (int64_t j = 0; j < Lg; ++j) {
            float c = 0.0f;
            for (int64_t l = 0; l < v.layers; ++l) {
                const float w = rel[j * v.layers + l] * samples;
                weight[l * Lg + j] = w;
                c += w;
            }
            coverage[j] = c;
        }
        v.weight = weight;
        v.coverage = coverage;
        touched += M * n;
    }
    if (K == 0 || F == 0 || Lg == 0) return;

    thread_local Scratch scratch;
    Problem p;
    p.lg = Lg;
    p.M = M;
    p.R2 = R2;
    p.F = F;
    p.views = &views;
    p.acc = scratch.accumulator(static_cast<size_t>(F * 2 * Lg));
    scratch.bits.resize(static_cast<size_t>((F + 63) / 64));
    p.bits = scratch.bits.data();

    // Parts: equal shares of the entry space, cut at multiples of 64 (bitmap words are not shared).
    const int64_t T = std::clamp<int64_t>(std::min<int64_t>(at::get_num_threads(), touched / kMinEntriesPerThread), 1,
                                          std::max<int64_t>(1, F / 64));
    std::vector<Part> parts(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
        parts[static_cast<size_t>(t)].f_lo = t == 0 ? 0 : (F * t / T) / 64 * 64;
        parts[static_cast<size_t>(t)].f_hi = t == T - 1 ? F : (F * (t + 1) / T) / 64 * 64;
    }
    run_parts(T, [&](int64_t t) { accumulate_part_any(p, parts[static_cast<size_t>(t)]); });

    // Every mask row must have been walked once, strictly rising, from its first to its last
    // element: part 0 started each row at 0, each part where the previous one stopped, the last at n.
    int64_t bad = K;
    for (const Part& part : parts)
        if (part.bad >= 0) bad = std::min(bad, part.bad);
    for (int64_t k = 0; k < K && bad == K; ++k)
        for (int64_t m = 0; m < M; ++m) {
            const auto km = static_cast<size_t>(k * M + m);
            bool ok = parts.front().start[km] == 0 && parts.back().end[km] == views[static_cast<size_t>(k)].n;
            for (size_t t = 1; t < parts.size(); ++t) ok = ok && parts[t].start[km] == parts[t - 1].end[km];
            if (!ok) {
                bad = k;
                break;
            }
        }
    if (bad < K)
        throw DataError("aggregate_sparse: the mask of client " + std::to_string(uploads[static_cast<size_t>(bad)]->client) +
                        " is not strictly ascending in [0, R*R) (validate_upload first)");

    // In place when the caller's tensor is the only reference to the bank's storage; else into a
    // copy, so that other references keep the old values (as with the torch::where this replaced).
    const bool in_place = bank.is_contiguous() && bank.scalar_type() == torch::kFloat32 && bank.device().is_cpu() &&
                          !bank.requires_grad() && bank.use_count() == 1 && bank.storage().use_count() == 1;
    torch::Tensor out = in_place ? bank : bank.to(torch::kFloat32).contiguous().clone();
    float* g = out.data_ptr<float>();
    run_parts(T, [&](int64_t t) { finish_part(p, parts[static_cast<size_t>(t)], g); });
    bank = out;
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

std::string exceeding_values(const torch::Tensor& values, double max_abs) {
    if (max_abs <= 0 || values.numel() == 0) return "";
    const double peak = values.abs().max().item<double>();
    if (peak <= max_abs) return "";
    char buf[160];
    std::snprintf(buf, sizeof buf, "values up to %.3g exceed federation.max_abs_value = %.3g", peak, max_abs);
    return buf;
}

}  // namespace h2tune
