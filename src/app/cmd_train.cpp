// `h2tune train`: runs a job file under MPI. Clients are spread round-robin over the ranks; every
// rank trains and evaluates its clients, rank 0 gathers the metrics and writes metrics.h5.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include "h2tune/app/build_info.h"
#include "h2tune/app/cli.h"
#include "h2tune/app/client_runtime.h"
#include "h2tune/app/federation_protocol.h"
#include "h2tune/app/command_options.h"
#include "h2tune/comm/communicator.h"
#include "h2tune/core/error.h"
#include "h2tune/core/job_config.h"
#include "h2tune/core/wire.h"
#include "h2tune/io/metrics_file.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace h2tune {

namespace {

const std::vector<std::string> kRoundMetrics = {"aggregate_seconds", "round_seconds"};
const std::vector<std::string> kClientInfo = {"majority_rate", "rank",           "layers",
                                              "adapter_parameters", "train_examples", "test_examples",
                                              "steps_per_round", "host_rank"};

// Rank 0 receives [client, v_0 .. v_{n-1}] records from every rank and sorts them by client.
std::vector<std::vector<double>> gather_records(const Communicator& comm, const std::vector<double>& local,
                                                size_t fields, size_t num_clients) {
    std::vector<std::vector<double>> table(num_clients);
    ByteWriter w;
    w.put_array(local.data(), local.size());
    auto parts = comm.gather(w.buffer(), 0);
    for (const auto& part : parts) {
        ByteReader r(part.data(), part.size(), "client info");
        const std::vector<double> v = r.get_array<double>();
        if (v.size() % (fields + 1) != 0) throw CommError("malformed metrics record");
        for (size_t i = 0; i < v.size(); i += fields + 1) {
            auto k = static_cast<size_t>(v[i]);
            if (k >= num_clients) throw CommError("metrics record for unknown client " + std::to_string(k));
            table[k].assign(v.begin() + static_cast<long>(i) + 1, v.begin() + static_cast<long>(i + fields + 1));
        }
    }
    return table;
}

int threads_per_rank(const JobConfig& job, const Communicator& comm) {
    if (job.run.threads > 0) return job.run.threads;
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return std::max(1, cores / std::max(1, comm.local_size()));
}

std::string format_bytes(double b) {
    char buf[32];
    if (b < 1024) std::snprintf(buf, sizeof buf, "%.0fB", b);
    else if (b < 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1fKiB", b / 1024);
    else std::snprintf(buf, sizeof buf, "%.2fMiB", b / (1024 * 1024));
    return buf;
}

std::string format_duration(double s) {
    char buf[32];
    if (s < 120) std::snprintf(buf, sizeof buf, "%.0fs", s);
    else std::snprintf(buf, sizeof buf, "%.0fm%02.0fs", std::floor(s / 60), std::fmod(s, 60));
    return buf;
}

}  // namespace

int cmd_train(const Args& args) {
    po::options_description desc("train options");
    std::vector<std::string> sets;
    desc.add_options()
        ("config,c", po::value<std::string>()->required(), "job file (INI), e.g. jobs/default.ini")
        ("output,o", po::value<std::string>(), "output directory (overrides run.output)")
        ("rounds", po::value<std::string>(), "number of rounds (overrides run.rounds)")
        ("method", po::value<std::string>(), "method (overrides run.method)")
        ("seed", po::value<std::string>(), "random seed (overrides run.seed)")
        ("threads", po::value<std::string>(), "intra-op threads per rank (overrides run.threads)")
        ("set", po::value<std::vector<std::string>>(&sets)->composing(), "override any key: --set client.0.lr=1e-3")
        ("force", po::bool_switch(), "overwrite an existing metrics.h5 in the output directory");
    po::variables_map vm;
    if (!parse_command_options("train", "--config FILE [options]", desc, args, vm)) return kExitOk;

    ConfigOverrides overrides;
    for (const char* key : {"output", "rounds", "method", "seed", "threads"})
        if (vm.count(key)) overrides.emplace_back(std::string("run.") + key, vm[key].as<std::string>());
    for (const auto& s : sets) {
        auto eq = s.find('=');
        if (eq == std::string::npos || eq == 0) throw ConfigError("command line: --set expects key=value, got '" + s + "'");
        overrides.emplace_back(s.substr(0, eq), s.substr(eq + 1));
    }
    JobConfig job = load_job_config(vm["config"].as<std::string>(), overrides);
    const bool federated = job.run.method == "h2tune" || job.run.method == "h2tune-dense";
    if (!federated && job.run.method != "local")
        throw ConfigError("command line: run.method = '" + job.run.method +
                          "' is not implemented in this version (available: local, h2tune, h2tune-dense)");
    if (job.federation.mask_refresh > 0 && job.run.method == "h2tune-dense")
        throw ConfigError(job.source + ": option 'federation.mask_refresh': method h2tune-dense uses the whole bank, "
                          "there is no mask to re-select; use 0");

    MpiSession mpi(nullptr, nullptr);
    Communicator comm;
    torch::set_num_threads(threads_per_rank(job, comm));
    const size_t K = job.clients.size();
    const bool root = comm.rank() == 0;

    std::unique_ptr<MetricsFile> metrics;
    const fs::path out_dir = job.run.output;
    if (root) {
        fs::create_directories(out_dir);
        metrics = std::make_unique<MetricsFile>((out_dir / "metrics.h5").string(), static_cast<int64_t>(K),
                                                client_metric_names(), kRoundMetrics, vm["force"].as<bool>());
        metrics->set_attribute("h2tune_version", h2tune_version());
        metrics->set_attribute("git_sha", git_sha());
        metrics->set_attribute("torch_version", torch_version());
        metrics->set_attribute("mpi_version", mpi_version());
        metrics->set_attribute("hdf5_version", hdf5_version());
        metrics->set_attribute("method", job.run.method);
        metrics->set_attribute("job_file", job.source);
        metrics->set_attribute("rounds_planned", static_cast<int64_t>(job.run.rounds));
        metrics->set_attribute("num_ranks", static_cast<int64_t>(comm.size()));
        metrics->write_config(job_config_to_ini(job));
        std::printf("h2tune train: %zu clients on %d ranks, method %s, %d rounds -> %s\n", K, comm.size(),
                    job.run.method.c_str(), job.run.rounds, (out_dir / "metrics.h5").string().c_str());
        std::fflush(stdout);
    }

    // Clients are spread round-robin: client k lives on rank k mod size.
    std::vector<std::unique_ptr<ClientRuntime>> clients;
    std::vector<double> info;
    const int64_t global_layers = federated ? resolve_global_layers(job) : 0;
    for (size_t k = static_cast<size_t>(comm.rank()); k < K; k += static_cast<size_t>(comm.size())) {
        clients.push_back(std::make_unique<ClientRuntime>(job, static_cast<int>(k), global_layers));
        const auto& c = *clients.back();
        info.insert(info.end(), {static_cast<double>(k), c.majority_rate(), static_cast<double>(c.rank()),
                                 static_cast<double>(c.num_layers()), static_cast<double>(c.trainable_parameters()),
                                 static_cast<double>(c.train_size()), static_cast<double>(c.test_size()),
                                 static_cast<double>(c.steps_per_round()), static_cast<double>(comm.rank())});
    }
    auto info_table = gather_records(comm, info, kClientInfo.size(), K);
    if (root) {
        std::vector<std::string> names;
        for (const auto& c : job.clients) names.push_back(c.model + "/" + (c.task.empty() ? c.train_file : c.task));
        metrics->write_client_names(names);
        for (size_t f = 0; f < kClientInfo.size(); ++f) {
            std::vector<double> col(K);
            for (size_t k = 0; k < K; ++k) col[k] = info_table[k].at(f);
            metrics->write_client_values(kClientInfo[f], col);
        }
        metrics->close();  // readable while round 0 runs
    }

    FederatedServer server;
    if (root && federated) {
        const int64_t M = static_cast<int64_t>(job.federation.modules.size()), R = job.federation.max_rank;
        metrics->set_attribute("global_layers", global_layers);
        metrics->set_attribute("max_rank", static_cast<int64_t>(R));
        // What the reference implementation sends per client per round in each direction.
        metrics->set_attribute("dense_bank_bytes", global_layers * M * R * R * static_cast<int64_t>(sizeof(float)));
        server.shape = BankShape{global_layers, static_cast<int64_t>(job.federation.modules.size()),
                                 job.federation.max_rank};
        server.bank = bank_zeros(server.shape);
        server.masks.resize(K);
        // Round 0 needs the masks before any upload: clients announce them once at start.
    }
    const FaultInjection fault = FaultInjection::from_environment();
    if (federated) exchange_masks(comm, clients, server, K, fault);

    const auto run_start = std::chrono::steady_clock::now();
    for (int round = 0; round < job.run.rounds; ++round) {
        const auto round_start = std::chrono::steady_clock::now();
        const std::vector<bool> participating = sample_participants(job, round);
        std::map<int, double> bytes_down;
        if (federated) {
            if (root) refresh_masks(server, job.federation, round, participating);
            bytes_down = send_downloads(comm, clients, server, participating, K);
        }

        ByteWriter upload;
        for (auto& client : clients) {
            const int k = client->config().index;
            ClientRoundMetrics m;
            const bool takes_part = participating[static_cast<size_t>(k)];
            if (takes_part) {
                m = client->train_round(round);
                client->evaluate(m);
            } else {
                m.test_accuracy = m.test_accuracy_generate = std::numeric_limits<double>::quiet_NaN();
            }
            pack_upload(upload, *client, m, takes_part, federated, fault, round, bytes_down[k]);
        }
        const auto parts = comm.gather(upload.buffer(), 0);
        if (root) {
            RoundTable table = receive_uploads(parts, server, K, federated, round);
            const double round_seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - round_start).count();
            metrics->append_round(table.columns, {{"aggregate_seconds", table.aggregate_seconds},
                                                  {"round_seconds", round_seconds}});
            double mean = 0, mn = 1, up = 0, down = 0;
            int counted = 0;
            for (size_t k = 0; k < K; ++k) {
                up += table.columns["bytes_up"][k];
                down += table.columns["bytes_down"][k];
                const double a = table.columns["test_accuracy"][k];
                if (std::isnan(a)) continue;
                mean += a;
                mn = std::min(mn, a);
                ++counted;
            }
            mean = counted ? mean / counted : 0.0;
            const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
            const double eta = elapsed / (round + 1) * (job.run.rounds - round - 1);
            std::printf("round %d/%d  acc mean %.3f min %.3f  bytes up %s down %s  %.1fs  ETA %s\n", round + 1,
                        job.run.rounds, mean, mn, format_bytes(up).c_str(), format_bytes(down).c_str(), round_seconds,
                        format_duration(eta).c_str());
            for (const auto& why : table.exclusions) std::printf("  excluded %s\n", why.c_str());
            std::fflush(stdout);
        }
    }
    if (root) {
        std::printf("h2tune train: done in %s; metrics in %s\n",
                    format_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count()).c_str(),
                    (out_dir / "metrics.h5").string().c_str());
    }
    for (auto& client : clients) {
        fs::path adapter_dir = out_dir / "adapters";
        fs::create_directories(adapter_dir);
        save_adapter(client->adapted(), (adapter_dir / ("client_" + std::to_string(client->config().index) + ".safetensors")).string());
    }
    comm.barrier();
    return kExitOk;
}

}  // namespace h2tune
