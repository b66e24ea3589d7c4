// bench_aggregation: rank-0 aggregation time (aggregate_sparse, src/method/sparse_bank.cpp) against
// the number of clients K and the bank's maximum rank R, next to a memcpy of the same payload bytes
// (the memory-bandwidth floor: aggregation has to read every byte the clients sent at least once).
// See bench/README.md.
//
// The uploads are synthetic but shaped like the default job's (jobs/default.ini): L_g = 8 global
// slots, M = 7 module types, clients cycling through (r_k, L_k) = (R/4, 4), (R/2, 6), (R, 8) (the
// default job's 8/16/32 at R = 32) — or r_k = R/2 for every client with --client-ranks half —
// masks from select_mask("topk") on random scores, column-stochastic relation matrices
// softmax(depth prior + noise), values N(0, 1) and sample counts 50..110. Every upload passes
// validate_upload. Clients are aggregated in id order, as rank 0 does.
//
// Timed: aggregate_sparse(bank, uploads) only (median of --reps, after one untimed repetition; the
// bank is re-copied before each call, untimed). Payload = sum over clients of values + relation +
// mask bytes (what validate_upload accepts and aggregate_sparse reads); memcpy = copying exactly
// those tensors into one preallocated buffer, alternating with the aggregation rep by rep. With --reference (default) the pre-optimisation implementation (one
// matmul and two index_add_ per client and module type, kept below verbatim) is timed too and the
// two results are compared element by element.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "bench_common.h"
#include "h2tune/core/process_setup.h"
#include "h2tune/core/error.h"
#include "h2tune/method/alignment.h"
#include "h2tune/method/sparse_bank.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using h2tune::bench::blas_threads;
using h2tune::bench::median;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }




// The implementation before this benchmark existed (git b724ae5, src/method/sparse_bank.cpp),
// verbatim: the reference for timing and for the results.
void aggregate_sparse_reference(torch::Tensor& bank, const std::vector<const h2tune::ClientUpload*>& uploads) {
    torch::NoGradGuard no_grad;
    const int64_t Lg = bank.size(0), M = bank.size(1);
    torch::Tensor numerator = torch::zeros_like(bank);
    torch::Tensor denominator = torch::zeros_like(bank);
    for (const h2tune::ClientUpload* u : uploads) {
        const torch::Tensor weighted = u->relation * u->samples;   // [L_g, L_k]
        const torch::Tensor coverage = weighted.sum(1);             // [L_g]: sum_l n_k Pi[j, l]
        for (int64_t m = 0; m < M; ++m) {
            const torch::Tensor idx = u->mask[m];                   // [n]
            const torch::Tensor mixed = torch::matmul(weighted, u->values.select(1, m));  // [L_g, n]
            numerator.select(1, m).index_add_(1, idx, mixed);
            denominator.select(1, m).index_add_(1, idx, coverage.unsqueeze(1).expand({Lg, idx.size(0)}));
        }
    }
    const torch::Tensor covered = denominator > 0;
    bank = torch::where(covered, numerator / denominator.clamp_min(1e-30), bank);
}

struct Options {
    std::vector<int64_t> clients{1, 2, 4, 8, 16, 32, 64, 128, 256};
    std::vector<int64_t> max_ranks{8, 16, 32, 64, 128};
    int64_t global_layers = 8;
    int64_t modules = 7;
    std::string client_ranks = "mix";
    int reps = 5;
    int reference_reps = 3;
    bool reference = true;
    int threads = 1;
    uint64_t seed = 1234;
    std::string json_path;
    bool mallopt_tuned = true;
};

std::vector<int64_t> parse_list(const std::string& s) {
    std::vector<int64_t> out;
    size_t start = 0;
    while (start < s.size()) {
        const size_t comma = s.find(',', start);
        const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!item.empty()) out.push_back(std::stoll(item));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

// Client k of a bank with max rank R.
h2tune::ClientUpload make_upload(const Options& o, int64_t R, int k) {
    static const int64_t kLayers[3] = {4, 6, 8};
    h2tune::ClientUpload u;
    u.client = k;
    u.samples = 50.0 + 10.0 * static_cast<double>(k % 7);
    if (o.client_ranks == "half")
        u.rank = std::max<int64_t>(1, R / 2);
    else
        u.rank = std::max<int64_t>(1, k % 3 == 0 ? R / 4 : k % 3 == 1 ? R / 2 : R);
    u.layers = kLayers[k % 3];
    const int64_t n = u.rank * u.rank;
    std::vector<torch::Tensor> rows;
    for (int64_t m = 0; m < o.modules; ++m)
        rows.push_back(h2tune::select_mask(torch::rand({R * R}), u.rank, R, "topk"));
    u.mask = torch::stack(rows);
    u.relation = h2tune::relation_matrix(
        h2tune::relation_prior(o.global_layers, u.layers, 0.5) + 0.5 * torch::randn({o.global_layers, u.layers}), 1.0);
    u.values = torch::randn({u.layers, o.modules, n});
    return u;
}

int64_t payload_bytes(const h2tune::ClientUpload& u) {
    return u.values.nbytes() + u.relation.nbytes() + u.mask.nbytes();
}

struct Cell {
    int64_t R = 0, K = 0, payload = 0;
    double memcpy_s = 0, aggregate_s = 0, reference_s = std::numeric_limits<double>::quiet_NaN();
    double max_abs_diff = std::numeric_limits<double>::quiet_NaN();
    bool bitwise_equal = false;
    std::vector<double> aggregate_all, memcpy_all;
};

Cell run_cell(const Options& o, int64_t R, const std::vector<h2tune::ClientUpload>& uploads, int64_t K,
              std::vector<char>& dst) {
    Cell c;
    c.R = R;
    c.K = K;
    std::vector<const h2tune::ClientUpload*> ptrs;
    for (int64_t k = 0; k < K; ++k) {
        ptrs.push_back(&uploads[static_cast<size_t>(k)]);
        c.payload += payload_bytes(uploads[static_cast<size_t>(k)]);
    }
    // memcpy of the same tensors into one buffer (touched beforehand, so no page faults), and the
    // aggregation, alternately in each repetition so that both see the same machine load.
    if (dst.size() < static_cast<size_t>(c.payload)) dst.assign(static_cast<size_t>(c.payload), 1);
    torch::manual_seed(o.seed + 99);
    const torch::Tensor bank0 = torch::randn({o.global_layers, o.modules, R * R});
    torch::Tensor result;
    for (int rep = 0; rep < o.reps + 1; ++rep) {  // rep 0 warms caches, the TLB and the buffers
        auto t0 = Clock::now();
        char* out = dst.data();
        for (const auto* u : ptrs)
            for (const torch::Tensor* t : {&u->values, &u->relation, &u->mask}) {
                std::memcpy(out, t->data_ptr(), t->nbytes());
                out += t->nbytes();
            }
        const double copy_s = seconds_since(t0);
        torch::Tensor bank = bank0.clone();
        t0 = Clock::now();
        h2tune::aggregate_sparse(bank, ptrs);
        const double aggregate_s = seconds_since(t0);
        if (rep > 0) {
            c.memcpy_all.push_back(copy_s);
            c.aggregate_all.push_back(aggregate_s);
        }
        result = bank;
    }
    c.memcpy_s = median(c.memcpy_all);
    c.aggregate_s = median(c.aggregate_all);
    if (o.reference) {
        std::vector<double> ref;
        torch::Tensor expected;
        for (int rep = 0; rep < std::max(1, o.reference_reps); ++rep) {
            torch::Tensor bank = bank0.clone();
            const auto t0 = Clock::now();
            aggregate_sparse_reference(bank, ptrs);
            ref.push_back(seconds_since(t0));
            expected = bank;
        }
        c.reference_s = median(ref);
        c.max_abs_diff = (result - expected).abs().max().item<double>();
        c.bitwise_equal = torch::equal(result, expected);
    }
    return c;
}

bool parse_options(int argc, char** argv, Options& o) {
    namespace po = boost::program_options;
    std::string clients = "1,2,4,8,16,32,64,128,256", ranks = "8,16,32,64,128";
    po::options_description desc("bench_aggregation: rank-0 aggregation time vs a memcpy of its payload");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help")
        ("clients", po::value(&clients)->default_value(clients), "comma list of client counts K")
        ("max-ranks", po::value(&ranks)->default_value(ranks), "comma list of bank ranks R")
        ("global-layers", po::value(&o.global_layers)->default_value(o.global_layers), "L_g")
        ("modules", po::value(&o.modules)->default_value(o.modules), "M (module types)")
        ("client-ranks", po::value(&o.client_ranks)->default_value(o.client_ranks), "mix: (R/4, R/2, R) cycling with L_k (4, 6, 8); half: R/2 for all")
        ("reps", po::value(&o.reps)->default_value(o.reps), "timed repetitions (median reported; one more untimed)")
        ("reference-reps", po::value(&o.reference_reps)->default_value(o.reference_reps), "timed repetitions of the reference implementation")
        ("no-reference", "skip the pre-optimisation reference implementation")
        ("threads", po::value(&o.threads)->default_value(o.threads), "torch::set_num_threads (0 = LibTorch's default)")
        ("seed", po::value(&o.seed)->default_value(o.seed), "seed of the synthetic uploads")
        ("json", po::value(&o.json_path), "write the results as JSON")
        ("no-mallopt", "leave glibc malloc at its defaults (h2tune's main tunes it)");
    // clang-format on
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return false;
    }
    o.reference = vm.count("no-reference") == 0;
    o.mallopt_tuned = vm.count("no-mallopt") == 0;
    o.clients = parse_list(clients);
    o.max_ranks = parse_list(ranks);
    if (o.clients.empty() || o.max_ranks.empty() || o.reps < 1 || o.global_layers < 1 || o.modules < 1)
        throw h2tune::ConfigError("--clients, --max-ranks, --reps, --global-layers, --modules must be positive");
    if (o.client_ranks != "mix" && o.client_ranks != "half") throw h2tune::ConfigError("--client-ranks: mix or half");
    return true;
}

int run(int argc, char** argv) {
    Options o;
    if (!parse_options(argc, argv, o)) return 0;
    if (o.mallopt_tuned) h2tune::tune_allocator();
    if (o.threads > 0) torch::set_num_threads(o.threads);
    const int threads = torch::get_num_threads();
    const int64_t max_k = *std::max_element(o.clients.begin(), o.clients.end());

    std::printf("bench_aggregation: L_g %lld, M %lld, client ranks %s, threads %d (OpenBLAS %d), reps %d\n",
                static_cast<long long>(o.global_layers), static_cast<long long>(o.modules), o.client_ranks.c_str(),
                threads, blas_threads(), o.reps);
    std::printf("%5s %5s %10s %11s %11s %7s %9s %11s %8s %10s\n", "R", "K", "payload MB", "memcpy ms", "aggreg ms",
                "ratio", "GB/s", "before ms", "speedup", "max|diff|");
    json cells = json::array();
    std::vector<char> dst;
    for (const int64_t R : o.max_ranks) {
        torch::manual_seed(o.seed + static_cast<uint64_t>(R));
        std::vector<h2tune::ClientUpload> uploads;
        const h2tune::BankShape shape{o.global_layers, o.modules, R};
        for (int k = 0; k < max_k; ++k) {
            uploads.push_back(make_upload(o, R, k));
            const std::string problem = h2tune::validate_upload(uploads.back(), shape);
            if (!problem.empty()) throw h2tune::Error("synthetic upload " + std::to_string(k) + ": " + problem);
        }
        for (const int64_t K : o.clients) {
            const Cell c = run_cell(o, R, uploads, K, dst);
            std::printf("%5lld %5lld %10.3f %11.4f %11.4f %7.2f %9.2f %11.4f %8.1f %10.2e%s\n",
                        static_cast<long long>(R), static_cast<long long>(K), static_cast<double>(c.payload) / 1e6,
                        c.memcpy_s * 1e3, c.aggregate_s * 1e3, c.aggregate_s / c.memcpy_s,
                        static_cast<double>(c.payload) / c.aggregate_s / 1e9, c.reference_s * 1e3,
                        c.reference_s / c.aggregate_s, c.max_abs_diff, o.reference && c.bitwise_equal ? " =" : "");
            std::fflush(stdout);
            cells.push_back({{"R", c.R},
                             {"K", c.K},
                             {"payload_bytes", c.payload},
                             {"memcpy_s", c.memcpy_s},
                             {"aggregate_s", c.aggregate_s},
                             {"ratio_to_memcpy", c.aggregate_s / c.memcpy_s},
                             {"aggregate_gb_per_s", static_cast<double>(c.payload) / c.aggregate_s / 1e9},
                             {"aggregate_min_s", *std::min_element(c.aggregate_all.begin(), c.aggregate_all.end())},
                             {"memcpy_min_s", *std::min_element(c.memcpy_all.begin(), c.memcpy_all.end())},
                             {"aggregate_all_s", c.aggregate_all},
                             {"memcpy_all_s", c.memcpy_all},
                             {"reference_s", o.reference ? json(c.reference_s) : json(nullptr)},
                             {"max_abs_diff_vs_reference", o.reference ? json(c.max_abs_diff) : json(nullptr)},
                             {"bitwise_equal_to_reference", o.reference ? json(c.bitwise_equal) : json(nullptr)}});
        }
    }
    std::printf("ratio = aggregate / memcpy of the same payload; before = the pre-optimisation implementation; "
                "'=' = bit-identical banks\n");
    if (!o.json_path.empty()) {
        json out = {{"tool", "bench_aggregation"},
                    {"torch_version", TORCH_VERSION},
                    {"threads", threads},
                    {"blas_threads", blas_threads()},
                    {"global_layers", o.global_layers},
                    {"modules", o.modules},
                    {"client_ranks", o.client_ranks},
                    {"reps", o.reps},
                    {"mallopt_tuned", o.mallopt_tuned},
                    {"cells", cells}};
        h2tune::bench::write_json(o.json_path, out);
        std::printf("wrote %s\n", o.json_path.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    h2tune::ensure_passive_openmp(argv);
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_aggregation: error: %s\n", e.what());
        return 1;
    }
}
